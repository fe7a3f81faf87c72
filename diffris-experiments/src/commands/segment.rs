//! `diffris segment --run DIR --image X --text "..." --out DIR`: one prediction, written as a
//! binary mask and an overlay.

use std::path::PathBuf;

use crate::device::backend::DeviceSpec;

/// Arguments of `diffris segment`.
#[derive(Debug, Clone, clap::Args)]
pub struct SegmentArgs {
    /// A finished run directory.
    #[arg(long)]
    pub run: PathBuf,
    #[arg(long)]
    pub image: PathBuf,
    #[arg(long)]
    pub text: String,
    /// Output directory (gets `mask.png` and `overlay.png`).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: SegmentArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.text.trim().is_empty(),
        "--text is empty: give the expression that refers to the object to segment"
    );
    crate::runner::segment::run(
        device,
        crate::runner::segment::Request {
            run: args.run,
            image: args.image,
            text: args.text,
            out: args.out,
            cache: args.cache,
        },
    )
}
