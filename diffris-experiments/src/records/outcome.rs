//! How a run ended (`result.json`): its metrics, or where it diverged.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::config::{RunDir, RunSpec};
use crate::eval::evaluate::Baselines;
use crate::eval::metrics::Metrics;
use crate::training::divergence::Divergence;
use crate::util::atomic_file::write_atomic;

/// What a finished run reports (`result.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub ablation: String,
    pub variant: String,
    pub label: String,
    pub seed: u64,
    pub best_epoch: usize,
    /// The selected model on the validation split.
    pub val: Metrics,
    pub test: Metrics,
    pub baselines: Baselines,
    pub train_seconds: f64,
    pub protocol: String,
    /// Digests of the files the run's results rest on ([`SEALED`]), taken when it finished
    /// (absent in runs from before they were recorded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

/// What `result.json` holds for a run whose loss stopped being finite: where, and no metrics
/// (its training ended without a model to select). Reruns with the same config reuse this
/// record (the same seed diverges at the same pass); `--restart` trains it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DivergedRun {
    pub ablation: String,
    pub variant: String,
    pub label: String,
    pub seed: u64,
    pub diverged: Divergence,
    pub train_seconds: f64,
}

/// How a run ended, as its `result.json` says.
// One per run of a command: not worth a box for the size difference.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Finished(RunResult),
    Diverged(DivergedRun),
}

impl Outcome {
    /// The metrics of a finished run.
    pub fn finished(&self) -> Option<&RunResult> {
        match self {
            Self::Finished(r) => Some(r),
            Self::Diverged(_) => None,
        }
    }
}

/// The one-line summary of a run's outcome (`None`: stopped early by `--stop-after`).
pub fn outcome_line(variant: &str, r: Option<&Outcome>) -> String {
    match r {
        Some(Outcome::Diverged(d)) => format!(
            "{:>24}  seed {}  diverged: {}",
            d.variant, d.seed, d.diverged
        ),
        Some(Outcome::Finished(r)) => format!(
            "{:>24}  seed {}  best epoch {}  test mIoU {:.2}  oIoU {:.2}  ({:.0} s training)",
            r.variant, r.seed, r.best_epoch, r.test.miou, r.test.oiou, r.train_seconds
        ),
        None => format!("{variant:>24}  stopped early (resumable)"),
    }
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

impl RunDir {
    /// Reads `dir/result.json`: a finished run's metrics, or where a diverged run stopped.
    pub fn read_result(&self) -> anyhow::Result<Outcome> {
        let path = self.result();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        let outcome = if value.get("diverged").is_some() {
            serde_json::from_value(value).map(Outcome::Diverged)
        } else {
            serde_json::from_value(value).map(Outcome::Finished)
        };
        outcome.with_context(|| format!("reading {}", path.display()))
    }

    /// Loads a run's outcome, if the run directory holds one for exactly this spec.
    pub fn finished(&self, spec: &RunSpec) -> anyhow::Result<Option<Outcome>> {
        if !self.has_ended() {
            return Ok(None);
        }
        if self.saved_config() != spec.to_ron()? {
            return Ok(None);
        }
        self.read_result().map(Some)
    }

    /// Writes `result.json`.
    pub fn save_outcome(&self, outcome: &Outcome) -> anyhow::Result<()> {
        match outcome {
            Outcome::Finished(r) => write_json(&self.result(), r),
            Outcome::Diverged(d) => write_json(&self.result(), d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diverged_outcome_reads_back_and_a_bad_result_names_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::at(tmp.path());
        let outcome = Outcome::Diverged(DivergedRun {
            ablation: "a".into(),
            variant: "v".into(),
            label: "V".into(),
            seed: 3,
            diverged: Divergence {
                split: "train".into(),
                epoch: 2,
                pass: 5,
                loss: "inf".into(),
            },
            train_seconds: 1.5,
        });
        dir.save_outcome(&outcome).unwrap();
        assert_eq!(dir.read_result().unwrap(), outcome);
        assert!(outcome.finished().is_none());
        // Neither shape: the error names the file and what is missing.
        std::fs::write(dir.result(), r#"{"ablation": "a"}"#).unwrap();
        let err = format!("{:#}", dir.read_result().unwrap_err());
        assert!(
            err.contains("result.json") && err.contains("missing field"),
            "{err}"
        );
    }
}
