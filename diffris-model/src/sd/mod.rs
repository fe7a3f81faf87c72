//! The Stable Diffusion components (diffusers / transformers layouts), one file per concept,
//! and SD's noise schedule ([`schedule`]).

pub mod attention;
pub mod clip;
pub mod config;
pub mod config_json;
pub mod embeddings;
pub mod resnet;
pub mod schedule;
pub mod stack;
pub mod unet;
pub mod vae;
pub mod vae_decoder;

pub use clip::ClipTextModel;
pub use config::{ClipActivation, ClipConfig, SdConfig, UNetConfig, VaeConfig};
pub use schedule::NoiseSchedule;
pub use stack::StableDiffusion;
pub use unet::{UNet2DConditionModel, UNetOutput, UNetRequest};
pub use vae::VaeEncoder;
pub use vae_decoder::VaeDecoder;
