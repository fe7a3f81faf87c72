//! `diffris train ABLATION [--variant NAME] [--seed N]`: one run of one variant.

use crate::commands::run_args::RunArgs;
use crate::config::recipe::{AblationFile, locate};
use crate::device::backend::DeviceList;
use crate::runner::ablation;

/// Arguments of `diffris train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Ablation file (name or path) holding the recipe.
    #[arg(default_value = "rrsisd")]
    pub ablation: String,
    /// Variant to train (default: the file's first).
    #[arg(long)]
    pub variant: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the resolved run spec and exit.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the command (an ablation restricted to one variant and seed).
pub fn run(devices: DeviceList, a: TrainArgs) -> anyhow::Result<()> {
    let variant = match a.variant {
        Some(v) => v,
        None => {
            let path = locate(&a.ablation, &a.run.ablations)?;
            AblationFile::load(&path)?.variants[0].name.clone()
        }
    };
    let request = a
        .run
        .request(a.ablation, a.dry_run, vec![variant], vec![a.seed])?;
    ablation::run(&devices, request)?.print()
}
