//! `diffris info`: where and what this binary runs.

use crate::device::backend::DeviceSpec;
use crate::device::info::{Request, describe};

/// Arguments of `diffris info`.
#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {
    /// Also print the parameter counts (trainable and frozen) of the DiffRIS model around this
    /// SD architecture (sd15 or tiny), without loading or allocating weights.
    #[arg(long)]
    pub model: Option<String>,
}

/// Prints the build and device summary.
pub fn run(device: DeviceSpec, args: &InfoArgs) -> anyhow::Result<()> {
    let request = Request {
        model: args.model.clone(),
    };
    println!("{}", describe(device, request)?);
    Ok(())
}
