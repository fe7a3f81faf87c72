//! `diffris init-sd`: writes seeded random weights of an SD architecture as a diffusers-style
//! folder (what the `tiny` profile uses in place of real Stable Diffusion weights).

use std::path::PathBuf;

use anyhow::Context;
use diffris_model::sd::SdConfig;

use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::inputs::frozen::write_random;

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

struct InitSd(InitSdArgs);

impl BackendJob for InitSd {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, _target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        let arch =
            SdConfig::preset(&a.arch).with_context(|| format!("unknown --arch `{}`", a.arch))?;
        anyhow::ensure!(!a.out.exists(), "{} already exists", a.out.display());
        write_random::<B>(&arch, a.seed, &a.out, &device)?;
        println!(
            "wrote random {} weights (seed {}) to {}",
            a.arch,
            a.seed,
            a.out.display()
        );
        Ok(())
    }
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: InitSdArgs) -> anyhow::Result<()> {
    dispatch(device, InitSd(args))?
}
