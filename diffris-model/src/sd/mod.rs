//! The frozen Stable Diffusion components (diffusers / transformers layouts), one file per
//! concept.

pub mod attention;
pub mod clip;
pub mod config;
pub mod config_json;
pub mod embeddings;
pub mod resnet;
pub mod stack;
pub mod unet;
pub mod vae;

pub use clip::ClipTextModel;
pub use config::{ClipActivation, ClipConfig, SdConfig, UNetConfig, VaeConfig};
pub use stack::StableDiffusion;
pub use unet::{UNet2DConditionModel, UNetOutput, UNetRequest};
pub use vae::VaeEncoder;
