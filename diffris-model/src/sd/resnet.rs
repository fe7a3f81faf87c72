//! diffusers `resnet.py` / `downsampling.py` / `upsampling.py`: the ResNet block with an
//! optional timestep embedding, and the 2x down- and upsamplers of the UNet and the VAE.

use crate::norm::sd_group_norm;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, backend::Backend};
use diffris_kernels::{SdBackend, sd_conv2d, sd_linear, sd_silu};

/// A 3x3 convolution with padding 1.
pub(crate) fn conv3x3<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A 1x1 convolution.
pub(crate) fn conv1x1<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [1, 1]).init(device)
}

/// `ResnetBlock2D`: `GN -> SiLU -> conv -> (+ temb) -> GN -> SiLU -> conv`, plus a 1x1
/// shortcut when the width changes.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: SdBackend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
}

impl<B: SdBackend> ResnetBlock2D<B> {
    /// `temb_dim` is `None` for the VAE's blocks, which take no timestep.
    pub fn new(
        cin: usize,
        cout: usize,
        temb_dim: Option<usize>,
        groups: usize,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            norm1: GroupNormConfig::new(groups, cin)
                .with_epsilon(eps)
                .init(device),
            conv1: conv3x3(cin, cout, device),
            time_emb_proj: temb_dim.map(|t| LinearConfig::new(t, cout).init(device)),
            norm2: GroupNormConfig::new(groups, cout)
                .with_epsilon(eps)
                .init(device),
            conv2: conv3x3(cout, cout, device),
            conv_shortcut: (cin != cout).then(|| conv1x1(cin, cout, device)),
        }
    }

    /// # Shapes
    /// `x`: `[B, C_in, H, W]`, `temb`: `[B, T]` -> `[B, C_out, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = sd_conv2d(&self.conv1, sd_silu(sd_group_norm(&self.norm1, x.clone())));
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let [b, c] = [h.dims()[0], h.dims()[1]];
            h = h + sd_linear(proj, sd_silu(t)).reshape([b, c, 1, 1]);
        }
        let h = sd_conv2d(&self.conv2, sd_silu(sd_group_norm(&self.norm2, h)));
        let shortcut = match &self.conv_shortcut {
            Some(conv) => sd_conv2d(conv, x),
            None => x,
        };
        shortcut + h
    }
}

/// `Downsample2D`: a 3x3 convolution of stride 2. The UNet pads by 1 on every side; the VAE
/// pads only bottom and right by 1 (LDM's asymmetric padding).
#[derive(Module, Debug)]
pub struct Downsample2D<B: SdBackend> {
    pub conv: Conv2d<B>,
}

impl<B: SdBackend> Downsample2D<B> {
    pub fn new(channels: usize, asymmetric: bool, device: &B::Device) -> Self {
        // Explicit padding is (top, left, bottom, right).
        let padding = if asymmetric {
            PaddingConfig2d::Explicit(0, 0, 1, 1)
        } else {
            PaddingConfig2d::Explicit(1, 1, 1, 1)
        };
        Self {
            conv: Conv2dConfig::new([channels, channels], [3, 3])
                .with_stride([2, 2])
                .with_padding(padding)
                .init(device),
        }
    }

    /// # Shapes
    /// `[B, C, H, W]` -> `[B, C, H/2, W/2]` (H, W even).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        sd_conv2d(&self.conv, x)
    }
}

/// `Upsample2D`: nearest-neighbour upsampling to a target size, then a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D<B: SdBackend> {
    pub conv: Conv2d<B>,
}

impl<B: SdBackend> Upsample2D<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv3x3(channels, channels, device),
        }
    }

    /// # Shapes
    /// `[B, C, H, W]` -> `[B, C, size[0], size[1]]` (normally `2H x 2W`; diffusers passes the
    /// skip connection's size when the input was not divisible).
    pub fn forward(&self, x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
        let up = interpolate(
            x,
            size,
            InterpolateOptions::new(InterpolateMode::Nearest).with_align_corners(false),
        );
        sd_conv2d(&self.conv, up)
    }
}
