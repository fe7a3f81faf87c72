//! `diffris train ABLATION [--variant NAME] [--seed N]`: one run of one variant.

use crate::backend::DeviceSpec;
use crate::commands::ablation::{AblationArgs, RunArgs};

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
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the command (an ablation restricted to one variant and seed).
pub fn run(device: DeviceSpec, a: TrainArgs) -> anyhow::Result<()> {
    let only = match a.variant {
        Some(v) => vec![v],
        None => {
            let path = crate::recipe::locate(&a.ablation, &a.run.ablations)?;
            vec![
                crate::recipe::AblationFile::load(&path)?.variants[0]
                    .name
                    .clone(),
            ]
        }
    };
    crate::commands::ablation::run(
        device,
        AblationArgs {
            name: a.ablation,
            dry_run: false,
            only,
            seeds: vec![a.seed],
            run: a.run,
        },
    )
}
