//! Times the stride-1 convolutions of SD-1.5's UNet on the CPU backend: flex's own `conv2d` and
//! transposed convolution (the input gradient) against `ops::cpu::conv`'s two routes (shifted
//! products; im2col / col2im) and the route it picks. Then the weight gradients of the trained
//! convolutions of PCMRD's mask head at a 512-pixel image (512 channels; 3x3 at 128x128 and
//! 256x256, the 1x1 projection at 256x256): Burn's `conv2d_weight_backward` on flex against
//! `ops::cpu::conv_weight`. Best of three runs each, batch 1.
//!
//! ```sh
//! cargo run --release -p diffris-model --example conv_speed
//! ```

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor, ModuleOps};
use burn::tensor::{Distribution, Tensor, TensorPrimitive};
use diffris_kernels::flex::conv::{
    Dims, forward, forward_im2col, forward_shifted, input_grad, input_grad_col2im,
    input_grad_shifted,
};
use diffris_kernels::flex::conv_weight::weight_grad;

/// `(c_in, c_out, side, kernel)`: the UNet's 3x3 layers at each level, a 1x1 shortcut and the
/// 4-channel input convolution.
const SHAPES: [(usize, usize, usize, usize); 7] = [
    (320, 320, 64, 3),
    (640, 640, 32, 3),
    (1280, 1280, 16, 3),
    (1280, 1280, 8, 3),
    (2560, 1280, 8, 3),
    (640, 320, 64, 1),
    (4, 320, 64, 3),
];

/// `(channels, side, kernel)` of the mask head's trained convolutions at a 512-pixel image.
const TRAINED: [(usize, usize, usize); 3] = [(512, 128, 3), (512, 256, 3), (512, 256, 1)];

fn values(t: Tensor<Flex, 4>) -> Vec<f32> {
    t.into_data().to_vec().expect("f32 values")
}

fn from_primitive(t: FloatTensor<Flex>) -> Tensor<Flex, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Best of three wall-clock times of `f`, in milliseconds, and its last result.
fn best_ms<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut last = None;
    for _ in 0..3 {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
        last = Some(out);
    }
    (best, last.expect("three runs"))
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn main() {
    let device = Default::default();
    println!(
        "shape | forward: flex, shifted, im2col, picked | input gradient: flex, shifted, col2im, picked (ms)"
    );
    for (c_in, c_out, side, k) in SHAPES {
        let p = k / 2;
        let x = Tensor::<Flex, 4>::random([1, c_in, side, side], Distribution::Default, &device);
        let w = Tensor::<Flex, 4>::random([c_out, c_in, k, k], Distribution::Default, &device);
        let g = Tensor::<Flex, 4>::random([1, c_out, side, side], Distribution::Default, &device);
        let (xs, ws, gs) = (values(x.clone()), values(w.clone()), values(g.clone()));
        let dims = Dims {
            batch: 1,
            c_in,
            h: side,
            w: side,
            c_out,
            kh: k,
            kw: k,
            ph: p,
            pw: p,
        };
        let (flex_fwd, flex_out) = best_ms(|| {
            let options = ConvOptions::new([1, 1], [p, p], [1, 1], 1);
            let (x, w) = (x.clone(), w.clone());
            from_primitive(Flex::conv2d(
                x.into_primitive().tensor(),
                w.into_primitive().tensor(),
                None,
                options,
            ))
        });
        let (flex_grad, flex_in) = best_ms(|| {
            let options = ConvTransposeOptions::new([1, 1], [p, p], [0, 0], [1, 1], 1);
            let (g, w) = (g.clone(), w.clone());
            from_primitive(Flex::conv_transpose2d(
                g.into_primitive().tensor(),
                w.into_primitive().tensor(),
                None,
                options,
            ))
        });
        let (flex_out, flex_in) = (values(flex_out), values(flex_in));
        let mut row = format!("{c_in}->{c_out} {side}x{side} k{k} | {flex_fwd:.1}");
        for f in [forward_shifted, forward_im2col, forward] {
            let (ms, out) = best_ms(|| f(&xs, &ws, None, dims));
            assert!(max_difference(&out, &flex_out) < 1e-2, "forward disagrees");
            row += &format!(", {ms:.1}");
        }
        row += &format!(" | {flex_grad:.1}");
        for f in [input_grad_shifted, input_grad_col2im, input_grad] {
            let (ms, out) = best_ms(|| f(&gs, &ws, dims));
            assert!(
                max_difference(&out, &flex_in) < 1e-2,
                "input gradient disagrees"
            );
            row += &format!(", {ms:.1}");
        }
        println!("{row}");
    }
    println!("shape | weight gradient: flex, ours (ms), largest difference / scale");
    for (c, side, k) in TRAINED {
        let p = k / 2;
        let x = Tensor::<Flex, 4>::random([1, c, side, side], Distribution::Default, &device);
        let w = Tensor::<Flex, 4>::random([c, c, k, k], Distribution::Default, &device);
        let g = Tensor::<Flex, 4>::random([1, c, side, side], Distribution::Default, &device);
        let (xs, gs) = (values(x.clone()), values(g.clone()));
        let dims = Dims {
            batch: 1,
            c_in: c,
            h: side,
            w: side,
            c_out: c,
            kh: k,
            kw: k,
            ph: p,
            pw: p,
        };
        let (flex_ms, flex_out) = best_ms(|| {
            let options = ConvOptions::new([1, 1], [p, p], [1, 1], 1);
            let (x, w, g) = (x.clone(), w.clone(), g.clone());
            from_primitive(Flex::conv2d_weight_backward(
                x.into_primitive().tensor(),
                w.into_primitive().tensor(),
                g.into_primitive().tensor(),
                options,
            ))
        });
        let flex_out = values(flex_out);
        let (ms, out) = best_ms(|| weight_grad(&xs, &gs, dims));
        let scale = flex_out.iter().fold(0f32, |m, v| m.max(v.abs()));
        println!(
            "{c}->{c} {side}x{side} k{k} | {flex_ms:.1}, {ms:.1} | {:.1e}",
            max_difference(&out, &flex_out) / scale
        );
    }
}
