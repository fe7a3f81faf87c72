//! Building blocks shared by the decoders: conv-BN-ReLU, two-conv fusion, bilinear resizing,
//! and picking the sentence state of each sample.

use super::resize::resize_bilinear_matmul;
use crate::norm::batch_norm;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::{Int, Tensor};
use diffris_kernels::{SdBackend, sd_conv2d, sd_relu};

/// A bias-free `k x k` convolution padded to keep the size (a normalisation follows it).
pub fn conv_no_bias<B: SdBackend>(
    cin: usize,
    cout: usize,
    kernel: usize,
    device: &B::Device,
) -> Conv2d<B> {
    let p = kernel / 2;
    Conv2dConfig::new([cin, cout], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

/// `Conv(k x k) -> BatchNorm -> ReLU` (bias-free conv, as BN follows).
#[derive(Module, Debug)]
pub struct ConvBnRelu<B: SdBackend> {
    pub conv: Conv2d<B>,
    pub bn: BatchNorm<B>,
}

impl<B: SdBackend> ConvBnRelu<B> {
    pub fn new(cin: usize, cout: usize, kernel: usize, device: &B::Device) -> Self {
        Self {
            conv: conv_no_bias(cin, cout, kernel, device),
            bn: BatchNormConfig::new(cout).init(device),
        }
    }

    /// `training`: batch statistics under autodiff (see [`batch_norm`]).
    ///
    /// # Shapes
    /// `[B, C_in, H, W]` -> `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, training: bool) -> Tensor<B, 4> {
        sd_relu(batch_norm(&self.bn, sd_conv2d(&self.conv, x), training))
    }
}

/// Two `Conv3x3-BN-ReLU` layers: the fusion of an upsampled coarse map with a finer tap.
#[derive(Module, Debug)]
pub struct Fusion<B: SdBackend> {
    pub first: ConvBnRelu<B>,
    pub second: ConvBnRelu<B>,
}

impl<B: SdBackend> Fusion<B> {
    pub fn new(cin: usize, cout: usize, device: &B::Device) -> Self {
        Self {
            first: ConvBnRelu::new(cin, cout, 3, device),
            second: ConvBnRelu::new(cout, cout, 3, device),
        }
    }

    /// # Shapes
    /// `[B, C_in, H, W]` -> `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, training: bool) -> Tensor<B, 4> {
        self.second
            .forward(self.first.forward(x, training), training)
    }
}

/// Bilinear resize with `align_corners = true` (CGFormer's and LAVT's decoders), differentiable
/// on every backend (see [`super::resize`]).
///
/// # Shapes
/// `[B, C, h, w]` -> `[B, C, size[0], size[1]]`.
pub fn resize_bilinear_corners<B: SdBackend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    resize_bilinear_matmul(x, size, true)
}

/// Bilinear resize with half-pixel centres (`align_corners = false`), for logits to the input
/// size; differentiable on every backend (see [`super::resize`]).
///
/// # Shapes
/// `[B, C, h, w]` -> `[B, C, size[0], size[1]]`.
pub fn resize_bilinear<B: SdBackend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    resize_bilinear_matmul(x, size, false)
}

/// The state at each sample's end-token position (CLIP's sentence token).
///
/// # Shapes
/// `text`: `[B, T, D]`, `eos_index`: `[B]` -> `[B, D]`.
pub fn gather_tokens<B: SdBackend>(
    text: Tensor<B, 3>,
    eos_index: Tensor<B, 1, Int>,
) -> Tensor<B, 2> {
    let [b, _, d] = text.dims();
    let index = eos_index.reshape([b, 1, 1]).expand([b, 1, d]);
    text.gather(1, index).reshape([b, d])
}

/// `true` at text positions after the first end token (to be ignored by attention).
///
/// # Shapes
/// `eos_index`: `[B]` -> `[B, T]`.
pub fn padding_mask<B: SdBackend>(
    eos_index: Tensor<B, 1, Int>,
    len: usize,
) -> Tensor<B, 2, burn::tensor::Bool> {
    let b = eos_index.dims()[0];
    let device = eos_index.device();
    let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device)
        .reshape([1, len])
        .expand([b, len]);
    positions.greater(eos_index.reshape([b, 1]).expand([b, len]))
}

/// DETR's 2-D sine positional encoding, normalised as in Mask2Former's pixel decoder (which
/// CARIS's decoder builds on): channel `i < d/2` of position `(y, x)` encodes the row, channel
/// `d/2 + i` the column, as `sin` (even `i`) or `cos` (odd `i`) of
/// `p / 10000^(2 floor(i/2) / (d/2))`, where `p = 2 pi r / (n + 1e-6)` for the 1-based row
/// (column) `r` of `n`.
///
/// # Shapes
/// Returns `[h * w, d]`, positions in row-major order; `d` must be even.
pub fn sine_position_embedding<B: SdBackend>(
    h: usize,
    w: usize,
    d: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    assert!(
        d.is_multiple_of(2),
        "a sine position embedding needs an even width, not {d}"
    );
    let half = d / 2;
    let scale = 2.0 * std::f64::consts::PI;
    let encode = |r: usize, n: usize, out: &mut Vec<f32>| {
        let p = r as f64 / (n as f64 + 1e-6) * scale;
        for i in 0..half {
            let t = p / 10000f64.powf((2 * (i / 2)) as f64 / half as f64);
            out.push(if i % 2 == 0 { t.sin() } else { t.cos() } as f32);
        }
    };
    let mut values = Vec::with_capacity(h * w * d);
    for y in 1..=h {
        for x in 1..=w {
            encode(y, h, &mut values);
            encode(x, w, &mut values);
        }
    }
    Tensor::from_data(burn::tensor::TensorData::new(values, [h * w, d]), device)
}
