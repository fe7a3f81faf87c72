//! diffusers `AutoencoderKL`, encoder half: `Encoder` + `quant_conv`, returning the posterior
//! mean. DiffRIS never decodes; the decoder is `vae_decoder.rs`, built only where asked for.

use crate::norm::group_norm;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, backend::Backend};
use diffris_kernels::{SdBackend, swap_dims};

use super::attention::{frozen_attention, merge_heads, split_heads};
use super::config::VaeConfig;
use super::resnet::{Downsample2D, ResnetBlock2D, conv1x1, conv3x3};
use crate::precision::{param_dtype, to_dtype};

/// The VAE's GroupNorm epsilon (diffusers hard-codes 1e-6 in the encoder).
pub(crate) const VAE_EPS: f64 = 1e-6;

/// `DownEncoderBlock2D`: resnets without timestep, then an asymmetric-padding downsampler.
#[derive(Module, Debug)]
pub struct DownEncoderBlock<B: SdBackend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
}

/// Single-head self-attention over pixels with its own GroupNorm and a residual (the VAE mid
/// block's `Attention`; LDM's `mid.attn_1` with 1x1-conv projections).
#[derive(Module, Debug)]
pub struct VaeAttention<B: Backend> {
    pub group_norm: GroupNorm<B>,
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    /// diffusers `to_out.0`.
    pub to_out: Linear<B>,
}

impl<B: SdBackend> VaeAttention<B> {
    pub(crate) fn new(channels: usize, groups: usize, device: &B::Device) -> Self {
        let lin = || LinearConfig::new(channels, channels).init(device);
        Self {
            group_norm: GroupNormConfig::new(groups, channels)
                .with_epsilon(VAE_EPS)
                .init(device),
            to_q: lin(),
            to_k: lin(),
            to_v: lin(),
            to_out: lin(),
        }
    }

    /// # Shapes
    /// `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let tokens = swap_dims(
            group_norm(&self.group_norm, x.clone()).reshape([b, c, h * w]),
            1,
            2,
        );
        let q = split_heads(self.to_q.forward(tokens.clone()), 1);
        let k = split_heads(self.to_k.forward(tokens.clone()), 1);
        let v = split_heads(self.to_v.forward(tokens), 1);
        let out = frozen_attention(q, k, v, AttentionModuleOptions::default());
        let out = self.to_out.forward(merge_heads(out));
        swap_dims(out, 1, 2).reshape([b, c, h, w]) + x
    }
}

/// `UNetMidBlock2D` of the VAE: resnet, attention (optional), resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: SdBackend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<VaeAttention<B>>,
}

/// diffusers `Encoder`.
#[derive(Module, Debug)]
pub struct Encoder<B: SdBackend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<DownEncoderBlock<B>>,
    pub mid_block: VaeMidBlock<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

/// The VAE encoder with `quant_conv`; paths match diffusers' `AutoencoderKL` keys.
#[derive(Module, Debug)]
pub struct VaeEncoder<B: SdBackend> {
    pub encoder: Encoder<B>,
    pub quant_conv: Conv2d<B>,
    config: VaeConfig,
}

impl VaeConfig {
    /// Builds the encoder with freshly initialised weights.
    pub fn init<B: SdBackend>(&self, device: &B::Device) -> VaeEncoder<B> {
        let ch = &self.block_out_channels;
        let g = self.norm_num_groups;
        let last = *ch.last().expect("validated: at least one block");
        let resnet = |cin, cout| ResnetBlock2D::new(cin, cout, None, g, VAE_EPS, device);
        let down_blocks = ch
            .iter()
            .enumerate()
            .map(|(i, &c)| DownEncoderBlock {
                resnets: (0..self.layers_per_block)
                    .map(|l| resnet(if l == 0 { ch[i.saturating_sub(1)] } else { c }, c))
                    .collect(),
                downsamplers: if i + 1 < ch.len() {
                    vec![Downsample2D::new(c, true, device)]
                } else {
                    vec![]
                },
            })
            .collect();
        let z = 2 * self.latent_channels;
        VaeEncoder {
            encoder: Encoder {
                conv_in: conv3x3(self.in_channels, ch[0], device),
                down_blocks,
                mid_block: VaeMidBlock {
                    resnets: vec![resnet(last, last), resnet(last, last)],
                    attentions: if self.mid_block_add_attention {
                        vec![VaeAttention::new(last, g, device)]
                    } else {
                        vec![]
                    },
                },
                conv_norm_out: GroupNormConfig::new(g, last)
                    .with_epsilon(VAE_EPS)
                    .init(device),
                conv_out: conv3x3(last, z, device),
            },
            quant_conv: conv1x1(z, z, device),
            config: self.clone(),
        }
    }
}

impl<B: SdBackend> VaeEncoder<B> {
    /// The architecture this encoder was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The same encoder with the latents' factor `scale` in its config (what a trained VAE
    /// measures on its own latents; saved as `scaling_factor`).
    pub fn with_scaling_factor(mut self, scale: f64) -> Self {
        self.config.scaling_factor = scale;
        self
    }

    /// The posterior mean (unscaled: multiply by the latent scale before the UNet), in the
    /// dtype of the encoder's weights (the image is cast to it).
    ///
    /// # Shapes
    /// `image`: `[B, 3, H, W]` in [-1, 1] (`H`, `W` multiples of the downsampling factor)
    /// -> `[B, latent_channels, H/f, W/f]`.
    pub fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        self.moments(image)
            .narrow(1, 0, self.config().latent_channels)
    }

    /// The posterior's mean and log-variance, the latter clamped to [-30, 20] as diffusers'
    /// `DiagonalGaussianDistribution` does (its `sample()` is `mean + exp(logvar / 2) * noise`:
    /// what latent-diffusion training encodes images with).
    ///
    /// # Shapes
    /// `image`: `[B, 3, H, W]` in [-1, 1] -> both `[B, latent_channels, H/f, W/f]`.
    pub fn posterior(&self, image: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let c = self.config().latent_channels;
        let moments = self.moments(image);
        let logvar = moments.clone().narrow(1, c, c).clamp(-30.0, 20.0);
        (moments.narrow(1, 0, c), logvar)
    }

    /// `quant_conv`'s output: mean and log-variance stacked on the channel axis.
    ///
    /// # Shapes
    /// `image`: `[B, 3, H, W]` -> `[B, 2 * latent_channels, H/f, W/f]`.
    fn moments(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        let e = &self.encoder;
        let image = to_dtype(image, param_dtype(&e.conv_in.weight));
        let mut x = e.conv_in.forward(image);
        for block in &e.down_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            for down in &block.downsamplers {
                x = down.forward(x);
            }
        }
        let mid = &e.mid_block;
        x = mid.resnets[0].forward(x, None);
        for attn in &mid.attentions {
            x = attn.forward(x);
        }
        x = mid.resnets[1].forward(x, None);
        self.quant_conv
            .forward(e.conv_out.forward(silu(group_norm(&e.conv_norm_out, x))))
    }
}
