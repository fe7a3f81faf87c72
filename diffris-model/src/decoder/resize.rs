//! Bilinear resizing written as two small matrix products, so that it has a backward on every
//! Burn backend.
//!
//! Burn 0.21's cubecl kernels (the `wgpu` and `cuda` backends) implement bilinear
//! `interpolate` forward only; its backward panics. Bilinear resizing is separable and linear:
//! resizing `X` of `[B, C, H, W]` to `[B, C, H', W']` is `A_h · X · A_w^T` per plane, with
//! interpolation matrices `A_h` of `[H', H]` and `A_w` of `[W', W]` whose rows hold the (at most
//! two) weights of each output coordinate. Matmul, reshape and swap have a backward everywhere,
//! and the gradient `A_h^T · G · A_w` is the exact adjoint of the forward, which is what a
//! dedicated bilinear backward computes. The weights follow Burn's and PyTorch's convention
//! (`coord = (o + 0.5) * in / out - 0.5` clamped at 0, or `o * (in - 1) / (out - 1)` with
//! `align_corners`), so the forward equals Burn's `interpolate` up to float rounding.

use burn::tensor::{Tensor, TensorData};
use diffris_kernels::SdBackend;

/// The `[out, in]` matrix (row-major) of 1-D linear interpolation from `input` samples to
/// `output` samples: row `o` holds the weights of the two input samples around `o`'s source
/// coordinate (one weight of 1 where they coincide or at a clamped border).
pub fn linear_weights(input: usize, output: usize, align_corners: bool) -> Vec<f32> {
    assert!(input > 0 && output > 0, "resize from {input} to {output}");
    let mut a = vec![0f32; output * input];
    let ratio = if align_corners {
        (input as f64 - 1.0) / (output.max(2) - 1) as f64
    } else {
        input as f64 / output as f64
    };
    for o in 0..output {
        let src = if align_corners {
            o as f64 * ratio
        } else {
            ((o as f64 + 0.5) * ratio - 0.5).max(0.0)
        };
        let low = (src.floor() as usize).min(input - 1);
        let high = (low + 1).min(input - 1);
        let frac = (src - low as f64).clamp(0.0, 1.0) as f32;
        a[o * input + low] += 1.0 - frac;
        a[o * input + high] += frac;
    }
    a
}

/// Bilinear resize by `A_h · X · A_w^T` (see the module docs).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, size[0], size[1]]`.
pub fn resize_bilinear_matmul<B: SdBackend>(
    x: Tensor<B, 4>,
    size: [usize; 2],
    align_corners: bool,
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let [oh, ow] = size;
    let device = x.device();
    // A_w^T: [W, W'].
    let aw = linear_weights(w, ow, align_corners);
    let mut awt = vec![0f32; w * ow];
    for o in 0..ow {
        for i in 0..w {
            awt[i * ow + o] = aw[o * w + i];
        }
    }
    let awt = Tensor::<B, 2>::from_data(TensorData::new(awt, [w, ow]), &device);
    let ah = Tensor::<B, 3>::from_data(
        TensorData::new(linear_weights(h, oh, align_corners), [1, oh, h]),
        &device,
    );
    // Rows: [B*C*H, W] x [W, W'] -> [B*C, H, W']; columns: [1, H', H] x [B*C, H, W'].
    let rows = x
        .reshape([b * c * h, w])
        .matmul(awt)
        .reshape([b * c, h, ow]);
    ah.matmul(rows).reshape([b, c, oh, ow])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    use burn::tensor::{Distribution, Tolerance};

    type AB = Autodiff<Flex>;

    fn burn_bilinear(x: Tensor<AB, 4>, size: [usize; 2], corners: bool) -> Tensor<AB, 4> {
        interpolate(
            x,
            size,
            InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(corners),
        )
    }

    /// Up, down, non-square and mixed (one axis up, the other down), with a size-1 axis.
    const CASES: [([usize; 2], [usize; 2]); 6] = [
        ([4, 4], [8, 8]),
        ([8, 8], [3, 3]),
        ([5, 7], [11, 4]),
        ([6, 3], [2, 9]),
        ([1, 5], [4, 5]),
        ([7, 6], [1, 1]),
    ];

    #[test]
    fn hand_computed_weights() {
        // Half-pixel centres, 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (high
        // neighbour clamped to 1, so weight 1 on sample 1).
        let a = linear_weights(2, 4, false);
        assert_eq!(
            a,
            vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0],
            "half-pixel 2 -> 4"
        );
        // Corners aligned, 3 -> 5: sources 0, 0.5, 1, 1.5, 2.
        let a = linear_weights(3, 5, true);
        let want = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        assert_eq!(a, want.concat(), "aligned 3 -> 5");
        // Every row of every case sums to one (interpolation preserves constants).
        for corners in [false, true] {
            for (i, o) in [(5usize, 11usize), (8, 3), (1, 4), (7, 1)] {
                for row in linear_weights(i, o, corners).chunks(i) {
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{i}->{o}");
                }
            }
        }
    }

    #[test]
    fn forward_equals_burn_interpolate() {
        let device = Default::default();
        for corners in [false, true] {
            for ([h, w], size) in CASES {
                let x = Tensor::<AB, 4>::random([2, 3, h, w], Distribution::Default, &device);
                let want = burn_bilinear(x.clone(), size, corners);
                let got = resize_bilinear_matmul(x, size, corners);
                assert_eq!(got.dims(), want.dims());
                // Same weights, different summation order: f32 rounding of values in [0, 1).
                got.into_data()
                    .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
            }
        }
    }

    #[test]
    fn gradient_equals_burn_interpolate_backward() {
        let device = Default::default();
        for corners in [false, true] {
            for ([h, w], size) in CASES {
                let x = Tensor::<AB, 4>::random([2, 3, h, w], Distribution::Default, &device);
                let weight = Tensor::<AB, 4>::random(
                    [2, 3, size[0], size[1]],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                );
                let grad_of = |f: &dyn Fn(Tensor<AB, 4>) -> Tensor<AB, 4>| {
                    let x = x.clone().require_grad();
                    let grads = (f(x.clone()) * weight.clone()).sum().backward();
                    x.grad(&grads).unwrap()
                };
                let want = grad_of(&|x| burn_bilinear(x, size, corners));
                let got = grad_of(&|x| resize_bilinear_matmul(x, size, corners));
                // Each input gathers at most ~2 * out/in weighted terms of N(0, 1) values: the
                // sums differ only by f32 rounding of the summation order.
                got.into_data()
                    .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
            }
        }
    }
}
