//! The three frozen Stable Diffusion components DiffRIS uses, held together.

use burn::module::Module;
use diffris_kernels::SdBackend;

use super::clip::ClipTextModel;
use super::config::SdConfig;
use super::unet::UNet2DConditionModel;
use super::vae::VaeEncoder;

/// CLIP text encoder, VAE encoder and UNet of one Stable Diffusion checkpoint.
#[derive(Module, Debug)]
pub struct StableDiffusion<B: SdBackend> {
    pub text_encoder: ClipTextModel<B>,
    pub vae: VaeEncoder<B>,
    pub unet: UNet2DConditionModel<B>,
}

impl SdConfig {
    /// Builds the three components with freshly initialised (random) weights. Parameters are
    /// initialised lazily: building even the full-size model allocates nothing until used or
    /// overwritten by a checkpoint.
    pub fn init<B: SdBackend>(&self, device: &B::Device) -> StableDiffusion<B> {
        StableDiffusion {
            text_encoder: self.clip.init(device),
            vae: self.vae.init(device),
            unet: self.unet.init(device),
        }
    }
}

impl<B: SdBackend> StableDiffusion<B> {
    /// The architecture of the three components.
    pub fn config(&self) -> SdConfig {
        SdConfig {
            unet: self.unet.config().clone(),
            vae: self.vae.config().clone(),
            clip: self.text_encoder.config().clone(),
        }
    }
}
