//! `diffris features`: runs the frozen SD stack on one image and expression and writes what it
//! sees (token ids, CLIP states, VAE latent, every UNet tap, cross-attention maps) to a
//! safetensors file, for probing and for checking a checkpoint against another implementation.

use std::path::PathBuf;

use crate::device::backend::DeviceSpec;

/// Arguments of `diffris features`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeaturesArgs {
    /// Stable Diffusion weights: a diffusers folder, or a single `.safetensors` / `.ckpt` file.
    #[arg(long)]
    pub sd: PathBuf,
    /// Architecture of a single-file checkpoint: sd15 or tiny.
    #[arg(long)]
    pub arch: Option<String>,
    /// The image.
    #[arg(long)]
    pub image: PathBuf,
    /// The referring expression.
    #[arg(long)]
    pub text: String,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
    /// Square input size (a multiple of 64); default: each side rounded to a multiple of 64.
    #[arg(long)]
    pub size: Option<usize>,
    /// UNet timestep of the single pass.
    #[arg(long, default_value_t = 1.0,
          value_parser = super::bounds::within(super::bounds::TIMESTEP.0, super::bounds::TIMESTEP.1))]
    pub timestep: f64,
    /// Latent scale: 1 (unscaled) as the paper profile's model reads it; SD-1.x's scaling
    /// factor is 0.18215.
    #[arg(long, default_value_t = 1.0)]
    pub latent_scale: f64,
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: FeaturesArgs) -> anyhow::Result<()> {
    crate::inputs::features::run(
        device,
        crate::inputs::features::Request {
            sd: args.sd,
            arch: args.arch,
            image: args.image,
            text: args.text,
            out: args.out,
            size: args.size,
            timestep: args.timestep,
            latent_scale: args.latent_scale,
        },
    )
}
