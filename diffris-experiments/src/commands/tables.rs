//! `diffris tables [NAME...]`: regenerates the tables and plots of every ablation (or the named
//! ones) from the saved runs, without training.

use std::path::PathBuf;

use crate::recipe::{AblationFile, locate};

/// Arguments of `diffris tables`.
#[derive(Debug, Clone, clap::Args)]
pub struct TablesArgs {
    /// Ablations to regenerate (default: every file in --ablations with saved runs).
    pub names: Vec<String>,
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    #[arg(long, default_value = "ablations")]
    pub ablations: PathBuf,
}

/// Runs the command.
pub fn run(a: TablesArgs) -> anyhow::Result<()> {
    let names: Vec<String> = if a.names.is_empty() {
        let mut v: Vec<String> = std::fs::read_dir(&a.ablations)?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".ron")
                    .map(String::from)
            })
            .filter(|n| a.results.join("runs").join(n).is_dir())
            .collect();
        v.sort();
        v
    } else {
        a.names.clone()
    };
    anyhow::ensure!(
        !names.is_empty(),
        "no saved runs under {}",
        a.results.join("runs").display()
    );
    for name in names {
        let file = AblationFile::load(&locate(&name, &a.ablations)?)?;
        let written = crate::report::write_ablation(&file, &a.results)?;
        println!("{}\n", written.markdown);
        for f in written.files {
            println!("  wrote {}", f.display());
        }
    }
    Ok(())
}
