//! The saved runs of an ablation, one row per variant, and the statistics over their seeds.

use std::path::{Path, PathBuf};

use crate::config::recipe::{AblationFile, Variant};
use crate::config::run_spec::ProfileName;
use crate::config::{RunDir, RunSpec};
use crate::records::{DivergedRun, Outcome, RunResult, TestScores, TrainedAs};

/// The runs of one variant that have ended: finished (with metrics) or diverged.
#[derive(Clone, Debug)]
pub struct Row<'a> {
    pub variant: &'a Variant,
    pub results: Vec<RunResult>,
    /// Each finished run's test scores, beside `results` (`None`: a run finished before runs
    /// wrote them).
    pub scores: Vec<Option<TestScores>>,
    pub diverged: Vec<DivergedRun>,
    /// How each of its runs (finished or diverged) was trained, by seed (`None`: no readable
    /// `env.json`).
    pub trained_as: Vec<(u64, Option<TrainedAs>)>,
}

impl Row<'_> {
    /// When the row's runs were trained by different builds or with different pass splits
    /// (their numbers may differ for that alone), each seed's way, e.g. `seed 0: revision abc,
    /// passes [8]; seed 1: ...`.
    pub fn mixed_training(&self) -> Option<String> {
        let distinct: std::collections::BTreeSet<_> =
            self.trained_as.iter().map(|(_, t)| t).collect();
        (distinct.len() > 1).then(|| {
            self.trained_as
                .iter()
                .map(|(seed, t)| match t {
                    Some(t) => format!("seed {seed}: revision {}, {}", t.revision, t.split()),
                    None => format!("seed {seed}: no env.json"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// Mean and sample standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// The config text (`config.ron`) a run of a variant and seed must hold to enter the table: the
/// run spec the current command resolves for it, given the run's own saved spec (where the
/// command leaves a choice to the run: `--micro-batch auto` accepts the micro-batch the run's
/// device fitted).
pub type Expected<'e> = &'e dyn Fn(&Variant, u64, &RunSpec) -> anyhow::Result<String>;

/// What [`collect`] found.
pub struct Collected<'a> {
    pub rows: Vec<Row<'a>>,
    pub profile: Option<ProfileName>,
    /// The SD weights folders the runs read by version name, where they read a folder rather
    /// than seeded random weights (under the tiny profile: `diffris pretrain`'s exports).
    pub weights: std::collections::BTreeMap<String, PathBuf>,
    /// Finished runs left out because their config is not the one the command resolves
    /// (another profile, flags or recipe).
    pub skipped: Vec<PathBuf>,
}

/// Reads every finished run of the file's variants (any seed found on disk) whose config is
/// the `expected` one; the others are listed as skipped, never averaged in.
pub fn collect<'a>(
    file: &'a AblationFile,
    results: &Path,
    expected: Expected<'_>,
) -> anyhow::Result<Collected<'a>> {
    let mut rows = Vec::new();
    let mut profile = None;
    let mut weights = std::collections::BTreeMap::new();
    let mut skipped = Vec::new();
    for v in &file.variants {
        let seeds = RunDir::seeds(results, &file.name, &v.name);
        let (mut results_v, mut scores, mut diverged, mut trained_as) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for seed in seeds {
            let dir = RunDir::new(results, &file.name, &v.name, seed);
            if !dir.has_ended() {
                continue;
            }
            let saved = dir.saved_config();
            let matches = match RunSpec::parse(&saved, &dir.config()) {
                Ok(spec) => saved == expected(v, seed, &spec)?,
                Err(_) => false,
            };
            if !matches {
                skipped.push(dir.path().to_path_buf());
                continue;
            }
            let r = dir.read_result()?;
            let spec = dir.read_spec()?;
            if profile.is_none() {
                profile = Some(spec.profile);
            }
            if let crate::config::run_spec::SdSource::Path(p) = &spec.sd_source {
                weights.insert(spec.sd_weights.clone(), p.clone());
            }
            trained_as.push((seed, dir.trained_as()));
            match r {
                Outcome::Finished(r) => {
                    scores.push(dir.read_test_scores(&r.test)?);
                    results_v.push(r);
                }
                Outcome::Diverged(d) => diverged.push(d),
            }
        }
        rows.push(Row {
            variant: v,
            results: results_v,
            scores,
            diverged,
            trained_as,
        });
    }
    Ok(Collected {
        rows,
        profile,
        weights,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_standard_deviation_by_hand() {
        // Mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5 over n - 1 = 3.
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(mean_std(&[7.0]), (7.0, 0.0));
        let (m, s) = mean_std(&[]);
        assert!(m.is_nan() && s.is_nan());
    }
}
