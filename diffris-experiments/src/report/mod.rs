//! What an ablation reports from its saved runs: the table ([`tables`]) and the plots
//! ([`plots`]) under `results/NAME/`.

pub mod curves;
pub mod figures;
pub mod plots;
pub mod runs;
pub mod tables;
pub mod uncertainty;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::RunDir;
use crate::config::recipe::AblationFile;
use crate::util::atomic_file::write_atomic;
use runs::{Collected, Expected, collect};
use tables::{csv, latex, markdown, notes};
use uncertainty::Uncertainty;

/// What [`write_ablation`] produced.
#[derive(Debug, Serialize)]
pub struct Written {
    pub markdown: String,
    pub files: Vec<PathBuf>,
    /// Finished runs left out of the table (their config is not the command's).
    pub skipped: Vec<PathBuf>,
}

/// Writes `results/NAME/table.{md,csv,tex}` and the plots from the saved runs whose config is
/// the `expected` one.
pub fn write_ablation(
    file: &AblationFile,
    results: &Path,
    expected: Expected<'_>,
) -> anyhow::Result<Written> {
    let Collected {
        rows,
        profile,
        weights,
        skipped,
    } = collect(file, results, expected)?;
    let dir = results.join(&file.name);
    // No run to show: a table of none would replace one that holds them (a `tables` call
    // without the runs' flags, `--cache` or `--results`), so nothing is written.
    if rows
        .iter()
        .all(|r| r.results.is_empty() && r.diverged.is_empty())
    {
        if skipped.is_empty() {
            anyhow::bail!(
                "no finished run of the {} table under {}, so {} was left as it was",
                file.name,
                RunDir::runs_root(results).join(&file.name).display(),
                dir.display()
            );
        }
        anyhow::bail!(
            "none of the {} finished run(s) of the {} table was made with the config this command \
             resolves (another profile, recipe or --epochs/--batch-size/--micro-batch/--lr/\
             --precision/--limit-* flags, or another --cache, where the tiny profile's data \
             lives), so {} was left as it was; pass the settings the runs were made with. The \
             runs: {}",
            skipped.len(),
            file.name,
            dir.display(),
            skipped
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let u = Uncertainty::of(file, &rows);
    let mut notes = notes(file, profile, &rows, &u);
    if profile == Some(crate::config::run_spec::ProfileName::Tiny) && !weights.is_empty() {
        tables::tiny_weights_note(&mut notes, &weights);
    }
    let md = markdown(file, &rows, &notes, &u);
    let mut files = Vec::new();
    for (name, text) in [
        ("table.md", md.clone()),
        ("table.csv", csv(file, &rows, &u)),
        ("table.tex", latex(file, &rows, &notes, &u)),
    ] {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes())?;
        files.push(path);
    }
    files.extend(plots::write_all(file, &rows, &u, results, &dir)?);
    Ok(Written {
        markdown: md,
        files,
        skipped,
    })
}
