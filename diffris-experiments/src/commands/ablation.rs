//! `diffris ablation NAME`: runs every variant (and seed) of `ablations/NAME.ron`, then writes
//! the table in the paper's layout and the plots under `results/NAME/`.

use crate::commands::run_args::RunArgs;
use crate::device::backend::DeviceList;
use crate::runner::ablation;

/// Arguments of `diffris ablation`.
#[derive(Debug, Clone, clap::Args)]
pub struct AblationArgs {
    /// Ablation name (a file `ablations/NAME.ron`) or path to a `.ron` file.
    pub name: String,
    /// Print every resolved run spec and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only these variants (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Seeds to run (comma-separated; default: the file's under the paper profile, its first
    /// under the tiny one).
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<u64>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the command.
pub fn run(devices: DeviceList, a: AblationArgs) -> anyhow::Result<()> {
    ablation::run(&devices, a.run.request(a.name, a.dry_run, a.only, a.seeds)?)?.print()
}
