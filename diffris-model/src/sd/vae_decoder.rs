//! diffusers `AutoencoderKL`, decoder half: `post_quant_conv` + `Decoder`, from a latent to an
//! image. DiffRIS never decodes; generative pre-training does (sampled images to look at, and
//! the reconstruction loss of a VAE trained from scratch).

use crate::norm::group_norm;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use diffris_kernels::SdBackend;

use super::config::VaeConfig;
use super::resnet::{ResnetBlock2D, Upsample2D, conv1x1, conv3x3};
use super::vae::{VAE_EPS, VaeAttention, VaeMidBlock};
use crate::precision::{param_dtype, to_dtype};

/// `UpDecoderBlock2D`: `layers_per_block + 1` resnets without timestep, then a nearest 2x
/// upsampler with a 3x3 convolution (all but the last block).
#[derive(Module, Debug)]
pub struct UpDecoderBlock<B: SdBackend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

/// diffusers `Decoder`.
#[derive(Module, Debug)]
pub struct Decoder<B: SdBackend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: VaeMidBlock<B>,
    pub up_blocks: Vec<UpDecoderBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

/// The VAE decoder with `post_quant_conv`; paths match diffusers' `AutoencoderKL` keys.
#[derive(Module, Debug)]
pub struct VaeDecoder<B: SdBackend> {
    pub post_quant_conv: Conv2d<B>,
    pub decoder: Decoder<B>,
    config: VaeConfig,
}

impl VaeConfig {
    /// Builds the decoder with freshly initialised weights: the encoder's widths in reverse.
    pub fn init_decoder<B: SdBackend>(&self, device: &B::Device) -> VaeDecoder<B> {
        let g = self.norm_num_groups;
        let reversed: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let first = reversed[0];
        let resnet = |cin, cout| ResnetBlock2D::new(cin, cout, None, g, VAE_EPS, device);
        let up_blocks = reversed
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let cin = reversed[i.saturating_sub(1)];
                UpDecoderBlock {
                    resnets: (0..=self.layers_per_block)
                        .map(|l| resnet(if l == 0 { cin } else { c }, c))
                        .collect(),
                    upsamplers: if i + 1 < reversed.len() {
                        vec![Upsample2D::new(c, device)]
                    } else {
                        vec![]
                    },
                }
            })
            .collect();
        let last = *reversed.last().expect("validated: at least one block");
        let z = self.latent_channels;
        VaeDecoder {
            post_quant_conv: conv1x1(z, z, device),
            decoder: Decoder {
                conv_in: conv3x3(z, first, device),
                mid_block: VaeMidBlock {
                    resnets: vec![resnet(first, first), resnet(first, first)],
                    attentions: if self.mid_block_add_attention {
                        vec![VaeAttention::new(first, g, device)]
                    } else {
                        vec![]
                    },
                },
                up_blocks,
                conv_norm_out: GroupNormConfig::new(g, last)
                    .with_epsilon(VAE_EPS)
                    .init(device),
                conv_out: conv3x3(last, self.in_channels, device),
            },
            config: self.clone(),
        }
    }
}

impl<B: SdBackend> VaeDecoder<B> {
    /// The architecture this decoder was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The same decoder with the latents' factor `scale` in its config (see
    /// [`super::vae::VaeEncoder::with_scaling_factor`]).
    pub fn with_scaling_factor(mut self, scale: f64) -> Self {
        self.config.scaling_factor = scale;
        self
    }

    /// The image a latent decodes to (diffusers' `AutoencoderKL.decode(z).sample`): pass the
    /// unscaled latent (divide a UNet-space latent by the latent scale first). Computed in the
    /// dtype of the decoder's weights (the latent is cast to it).
    ///
    /// # Shapes
    /// `latent`: `[B, latent_channels, h, w]` -> `[B, in_channels, h * f, w * f]`, `f` = 2 to
    /// the number of upsamplers (8 for SD-1.x), values about [-1, 1] (not clamped).
    pub fn forward(&self, latent: Tensor<B, 4>) -> Tensor<B, 4> {
        let d = &self.decoder;
        let latent = to_dtype(latent, param_dtype(&self.post_quant_conv.weight));
        let mut x = d.conv_in.forward(self.post_quant_conv.forward(latent));
        let mid = &d.mid_block;
        x = mid.resnets[0].forward(x, None);
        for attn in &mid.attentions {
            x = attn.forward(x);
        }
        x = mid.resnets[1].forward(x, None);
        for block in &d.up_blocks {
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            for up in &block.upsamplers {
                let [_, _, h, w] = x.dims();
                x = up.forward(x, [2 * h, 2 * w]);
            }
        }
        d.conv_out.forward(silu(group_norm(&d.conv_norm_out, x)))
    }
}
