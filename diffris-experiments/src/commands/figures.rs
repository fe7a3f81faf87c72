//! `diffris figures --run DIR [--run DIR2 ...] --split S`: the paper's qualitative figures
//! (Figs. 5-7): for the best, the median and the worst sample of the first run (by its IoU),
//! a row of image, ground truth and each run's prediction with its IoU, as one PNG.

use std::path::PathBuf;

use crate::device::backend::DeviceSpec;
use crate::eval::metrics::Protocol;

/// Arguments of `diffris figures`.
#[derive(Debug, Clone, clap::Args)]
pub struct FiguresArgs {
    /// A finished run directory; repeat to compare runs (the first one picks the samples).
    #[arg(long = "run", required = true)]
    pub runs: Vec<PathBuf>,
    /// Split to draw from (default: the first run's test split).
    #[arg(long)]
    pub split: Option<String>,
    /// Protocol of the IoUs (default: the first run's).
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// Use the first N samples of the split (default: as many as the first run's evaluation
    /// read).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Width of one panel in pixels.
    #[arg(long, default_value_t = 192,
          value_parser = super::bounds::within(super::bounds::PANEL.0, super::bounds::PANEL.1))]
    pub panel: u32,
    /// The PNG to write.
    #[arg(long, default_value = "figures.png")]
    pub out: PathBuf,
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: FiguresArgs) -> anyhow::Result<()> {
    crate::runner::qualitative::run(
        device,
        crate::runner::qualitative::Request {
            runs: args.runs,
            split: args.split,
            protocol: args.protocol,
            limit: args.limit,
            panel: args.panel,
            out: args.out,
            cache: args.cache,
        },
    )
}
