//! `diffris init-sd`: writes seeded random weights of an SD architecture as a diffusers-style
//! folder (what the `tiny` profile uses in place of real Stable Diffusion weights).

use std::path::PathBuf;

use crate::device::backend::DeviceSpec;

/// Arguments of `diffris init-sd`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitSdArgs {
    /// Architecture preset: tiny or sd15.
    #[arg(long, default_value = "tiny")]
    pub arch: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: InitSdArgs) -> anyhow::Result<()> {
    crate::inputs::init_sd::run(
        device,
        crate::inputs::init_sd::Request {
            arch: args.arch,
            seed: args.seed,
            out: args.out,
        },
    )
}
