//! `diffris sample`: images generated from captions (see [`crate::pretrain::sample`]).

use std::path::PathBuf;

use crate::device::backend::DeviceSpec;
use crate::pretrain::sample::Request;

/// Arguments of `diffris sample`.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// A diffusers folder with a VAE decoder (a released SD, or an export of `diffris pretrain`
    /// whose VAE trained).
    #[arg(long)]
    pub sd: PathBuf,
    /// A caption (repeat the flag for several: one grid row each).
    #[arg(long = "caption", required = true)]
    pub captions: Vec<String>,
    /// Images per caption (the grid's columns).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub per_caption: u64,
    /// DDIM steps.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub steps: u64,
    /// Classifier-free guidance scale (1: the captions alone; diffusers' default 7.5).
    #[arg(long, default_value_t = 7.5, value_parser = super::bounds::within(0.0, 100.0))]
    pub guidance: f64,
    /// Side of the square images. Default: 64 for the tiny architecture, else 512.
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..=4096))]
    pub image_size: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs the command.
pub fn run(device: DeviceSpec, a: SampleArgs) -> anyhow::Result<()> {
    crate::pretrain::sample::run(
        device,
        Request {
            sd: a.sd,
            captions: a.captions,
            per_caption: a.per_caption as usize,
            steps: a.steps as usize,
            guidance: a.guidance,
            image_size: a.image_size.map(|s| s as usize),
            seed: a.seed,
            out: a.out,
        },
    )
}
