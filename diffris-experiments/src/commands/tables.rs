//! `diffris tables [NAME...]`: regenerates the tables and plots of every ablation (or the named
//! ones) from the saved runs, without training.

use anyhow::Context;
use indicatif::MultiProgress;

use crate::commands::run_args::RunArgs;
use crate::config::RunDir;
use crate::config::recipe::{AblationFile, locate};
use crate::runner::ablation::write_tables;

/// Arguments of `diffris tables`: the ablations, and the settings the runs were made with (only
/// runs whose config these settings resolve enter a table).
#[derive(Debug, Clone, clap::Args)]
pub struct TablesArgs {
    /// Ablations to regenerate (default: every file in --ablations with saved runs).
    pub names: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs the command.
pub fn run(a: TablesArgs) -> anyhow::Result<()> {
    let (ws, resolver) = a.run.resolve(MultiProgress::new())?;
    let overrides = a.run.overrides();
    let (results, ablations) = (&ws.results, &a.run.ablations);
    let names: Vec<String> = if a.names.is_empty() {
        let mut v: Vec<String> = std::fs::read_dir(ablations)
            .with_context(|| format!("reading the ablation folder {}", ablations.display()))?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".ron")
                    .map(String::from)
            })
            .filter(|n| RunDir::ablation_has_runs(results, n))
            .collect();
        v.sort();
        v
    } else {
        a.names.clone()
    };
    anyhow::ensure!(
        !names.is_empty(),
        "no saved runs under {}",
        RunDir::runs_root(results).display()
    );
    // Each ablation on its own: one whose runs do not match leaves the others' tables written.
    let mut failed = Vec::new();
    for name in names {
        let written = locate(&name, ablations)
            .and_then(|path| AblationFile::load(&path))
            .and_then(|file| write_tables(&file, &resolver, &overrides, results));
        match written {
            Ok(written) => {
                println!("{}\n", written.markdown);
                for f in written.files {
                    println!("  wrote {}", f.display());
                }
            }
            Err(e) => failed.push(format!("{name}: {e:#}")),
        }
    }
    anyhow::ensure!(failed.is_empty(), "{}", failed.join("\n"));
    Ok(())
}
