//! The adaptive rotated convolution of RMSIN's OAD decoder (after ARC, "Adaptive Rotated
//! Convolution for Rotated Object Detection"): `n` 3x3 kernels (RMSIN: 4); a routing branch
//! predicts, per sample, an angle `theta_i = softsign(.) * max_angle` and a gate
//! `alpha_i = sigmoid(.)` for each; every kernel's taps are bilinearly rotated by its angle,
//! the rotated kernels are summed with their gates, and the per-sample kernel is applied as a
//! grouped convolution with one group per sample.
//!
//! Unlike RMSIN: no dropout in the routing branch, and the kernels and routing layers start
//! from Burn's default initialisation (see `docs/DESIGN.md`). With `n = 1` the weights are
//! laid out as before kernel mixtures existed: a run trained then loads with `kernels: 1`
//! written into its `config.ron`.

use crate::norm::batch_norm;
use crate::ops::{SdBackend, sd_relu};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::tensor::Tensor;
use burn::tensor::activation::{relu, sigmoid, softsign};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

/// Offsets `(x, y)` of the 3x3 taps in row-major order (`y` grows downwards).
const TAPS: [(f32, f32); 9] = [
    (-1.0, -1.0),
    (0.0, -1.0),
    (1.0, -1.0),
    (-1.0, 0.0),
    (0.0, 0.0),
    (1.0, 0.0),
    (-1.0, 1.0),
    (0.0, 1.0),
    (1.0, 1.0),
];

/// Per-sample 9x9 matrices `M` with `rotated = M . taps`: tap `p` of the rotated kernel takes
/// the original kernel's value at `R(-theta) p`, bilinearly interpolated (zero outside). A tap
/// at `q` therefore moves to `R(theta) q`.
///
/// # Shapes
/// `theta` (radians): `[B]` -> `[B, 9, 9]`.
pub fn rotation_matrices<B: SdBackend>(theta: Tensor<B, 1>) -> Tensor<B, 3> {
    let b = theta.dims()[0];
    let device = theta.device();
    let (cos, sin) = (
        theta.clone().cos().reshape([b, 1, 1]),
        theta.sin().reshape([b, 1, 1]),
    );
    let px = Tensor::<B, 1>::from_floats(TAPS.map(|t| t.0), &device).reshape([1, 9, 1]);
    let py = Tensor::<B, 1>::from_floats(TAPS.map(|t| t.1), &device).reshape([1, 9, 1]);
    let qx = px.clone().reshape([1, 1, 9]);
    let qy = py.clone().reshape([1, 1, 9]);
    // Source of target tap p: R(-theta) p = (x cos + y sin, -x sin + y cos).
    let sx = px.clone() * cos.clone() + py.clone() * sin.clone();
    let sy = py * cos - px * sin;
    let wx = (sx - qx).abs().neg().add_scalar(1.0).clamp_min(0.0);
    let wy = (sy - qy).abs().neg().add_scalar(1.0).clamp_min(0.0);
    wx * wy
}

/// Rotated, gated 3x3 conv (a mixture of `n` kernels) -> BN -> ReLU.
#[derive(Module, Debug)]
pub struct RotatedConvBnRelu<B: SdBackend> {
    /// `[n * C_out, C_in, 3, 3]`: kernel `i` is rows `i * C_out .. (i + 1) * C_out`.
    pub weight: Param<Tensor<B, 4>>,
    pub routing_conv: Conv2d<B>,
    pub routing_norm: LayerNorm<B>,
    pub routing_fc: Linear<B>,
    pub bn: BatchNorm<B>,
    max_angle: f64,
}

impl<B: SdBackend> RotatedConvBnRelu<B> {
    /// A mixture of `kernels` rotated kernels from `cin` to `cout` channels.
    pub fn new(
        cin: usize,
        cout: usize,
        kernels: usize,
        max_angle_deg: f64,
        device: &B::Device,
    ) -> Self {
        let fan_in = cin * 9;
        let bound = 1.0 / (fan_in as f64).sqrt();
        Self {
            weight: Initializer::Uniform {
                min: -bound,
                max: bound,
            }
            .init([kernels * cout, cin, 3, 3], device),
            routing_conv: Conv2dConfig::new([cin, cin], [3, 3])
                .with_groups(cin)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            routing_norm: LayerNormConfig::new(cin).init(device),
            // Outputs: the `n` angles, then the `n` gates.
            routing_fc: LinearConfig::new(cin, 2 * kernels).init(device),
            bn: BatchNormConfig::new(cout).init(device),
            max_angle: max_angle_deg.to_radians(),
        }
    }

    /// Per-sample angles (radians) and gates of the `n` kernels, from the routing branch.
    ///
    /// # Shapes
    /// `[B, C, H, W]` -> (`[B, n]`, `[B, n]`).
    pub fn route(&self, x: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let [b, c, _, _] = x.dims();
        let r = self.routing_conv.forward(x);
        // LayerNorm over channels at every pixel, then ReLU and global average pooling.
        let r = self
            .routing_norm
            .forward(r.permute([0, 2, 3, 1]))
            .permute([0, 3, 1, 2]);
        let pooled = relu(r).mean_dim(3).mean_dim(2).reshape([b, c]);
        let out = self.routing_fc.forward(pooled);
        let n = out.dims()[1] / 2;
        let theta = softsign(out.clone().narrow(1, 0, n)).mul_scalar(self.max_angle);
        let alpha = sigmoid(out.narrow(1, n, n));
        (theta, alpha)
    }

    /// The rotated, gated convolution without BN/ReLU, for given angles and gates: per sample,
    /// `sum_i alpha_i rotate(W_i, theta_i)` as the kernel.
    ///
    /// # Shapes
    /// `x`: `[B, C_in, H, W]`, `theta`, `alpha`: `[B, n]` -> `[B, C_out, H, W]`.
    pub fn rotated_conv(
        &self,
        x: Tensor<B, 4>,
        theta: Tensor<B, 2>,
        alpha: Tensor<B, 2>,
    ) -> Tensor<B, 4> {
        let [b, cin, h, w] = x.dims();
        let n = theta.dims()[1];
        let weight = self.weight.val();
        let cout = weight.dims()[0] / n;
        let m = rotation_matrices(theta.reshape([b * n]));
        let taps = weight
            .reshape([1, n, cout * cin, 9])
            .expand([b, n, cout * cin, 9])
            .reshape([b * n, cout * cin, 9]);
        let rotated = taps.matmul(m.swap_dims(1, 2)) * alpha.reshape([b * n, 1, 1]);
        let kernels =
            rotated
                .reshape([b, n, cout * cin * 9])
                .sum_dim(1)
                .reshape([b * cout, cin, 3, 3]);
        let grouped = conv2d(
            x.reshape([1, b * cin, h, w]),
            kernels,
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], b),
        );
        grouped.reshape([b, cout, h, w])
    }

    /// `training`: batch statistics under autodiff (see [`batch_norm`]).
    ///
    /// # Shapes
    /// `[B, C_in, H, W]` -> `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, training: bool) -> Tensor<B, 4> {
        let (theta, alpha) = self.route(x.clone());
        sd_relu(batch_norm(
            &self.bn,
            self.rotated_conv(x, theta, alpha),
            training,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, TensorData};

    type B = Flex;

    #[test]
    fn angle_zero_and_gate_one_is_a_plain_conv() {
        let device = Default::default();
        let layer = RotatedConvBnRelu::<B>::new(3, 4, 1, 40.0, &device);
        let x = Tensor::<B, 4>::random([2, 3, 5, 6], Distribution::Normal(0.0, 1.0), &device);
        let zero = Tensor::<B, 2>::zeros([2, 1], &device);
        let one = Tensor::<B, 2>::ones([2, 1], &device);
        let got = layer.rotated_conv(x.clone(), zero, one);
        let want = conv2d(
            x,
            layer.weight.val(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }

    /// The mixture is linear in its kernels: per sample, the convolution with
    /// `sum_i alpha_i rotate(W_i, theta_i)`. Checked against a plain convolution with that
    /// kernel built by hand: unrotated kernels with gates 0.5, 2, -1 for sample 0, and for
    /// sample 1 kernel 1 alone, turned by 90 degrees (its taps moved a quarter turn).
    #[test]
    fn kernels_mix_by_their_gates_each_rotated_by_its_angle() {
        let device = Default::default();
        let (cin, cout, n) = (2, 3, 3);
        let layer = RotatedConvBnRelu::<B>::new(cin, cout, n, 40.0, &device);
        let x = Tensor::<B, 4>::random([2, cin, 5, 6], Distribution::Normal(0.0, 1.0), &device);
        let quarter = std::f32::consts::FRAC_PI_2;
        let theta = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.0, 0.0, 0.0, 0.0, quarter, 0.0], [2, n]),
            &device,
        );
        let alpha = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.5f32, 2.0, -1.0, 0.0, 1.0, 0.0], [2, n]),
            &device,
        );
        let got = layer.rotated_conv(x.clone(), theta, alpha);
        let w: Vec<f32> = layer.weight.val().into_data().to_vec().unwrap();
        let per = cout * cin * 9;
        let kernel = |i: usize| &w[i * per..(i + 1) * per];
        let mixed: Vec<f32> = (0..per)
            .map(|j| 0.5 * kernel(0)[j] + 2.0 * kernel(1)[j] - kernel(2)[j])
            .collect();
        // A quarter turn: the tap at (x, y) goes to (-y, x) (y grows downwards).
        let mut turned = vec![0f32; per];
        for (k, chunk) in kernel(1).chunks(9).enumerate() {
            for (t, &(tx, ty)) in TAPS.iter().enumerate() {
                let to = TAPS
                    .iter()
                    .position(|&(ux, uy)| ux == -ty && uy == tx)
                    .unwrap();
                turned[k * 9 + to] = chunk[t];
            }
        }
        let conv = |x: Tensor<B, 4>, k: Vec<f32>| {
            let k = Tensor::<B, 4>::from_data(TensorData::new(k, [cout, cin, 3, 3]), &device);
            conv2d(x, k, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1))
        };
        for (s, k) in [(0, mixed), (1, turned)] {
            let want = conv(x.clone().narrow(0, s, 1), k);
            let diff: f32 = (got.clone().narrow(0, s, 1) - want)
                .abs()
                .max()
                .into_scalar();
            assert!(diff < 1e-5, "sample {s}: {diff}");
        }
    }

    #[test]
    fn ninety_degrees_moves_taps_by_a_quarter_turn() {
        let device = Default::default();
        let theta = Tensor::<B, 1>::from_floats([std::f32::consts::FRAC_PI_2], &device);
        let m = rotation_matrices(theta);
        // A kernel with a single 1 at the right tap (x=1, y=0; index 5).
        let mut k = vec![0f32; 9];
        k[5] = 1.0;
        let k = Tensor::<B, 3>::from_data(TensorData::new(k, [1, 1, 9]), &device);
        let rotated: Vec<f32> = k.matmul(m.swap_dims(1, 2)).into_data().to_vec().unwrap();
        // R(90deg) (1, 0) = (0, 1): the bottom tap (index 7), with y growing downwards.
        for (i, v) in rotated.iter().enumerate() {
            let want = if i == 7 { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-6, "tap {i}: {v} ({rotated:?})");
        }
        // The centre tap stays put under any rotation.
        let theta = Tensor::<B, 1>::from_floats([0.3], &device);
        let m: Vec<f32> = rotation_matrices(theta).into_data().to_vec().unwrap();
        assert!((m[4 * 9 + 4] - 1.0).abs() < 1e-6);
    }
}
