//! `diffris init-sd` from its request to its folder: seeded random SD weights of an
//! architecture, written as the diffusers folder every command can load.

use std::path::PathBuf;

use anyhow::Context;
use diffris_model::sd::SdConfig;

use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::inputs::frozen::write_random;

/// What `diffris init-sd` was asked (its arguments).
pub struct Request {
    pub arch: String,
    pub seed: u64,
    pub out: PathBuf,
}

struct InitSd(Request);

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

/// Runs `request` on `device`.
pub fn run(device: DeviceSpec, request: Request) -> anyhow::Result<()> {
    dispatch(device, InitSd(request))?
}
