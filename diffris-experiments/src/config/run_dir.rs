//! The folder of one run (`RESULTS/runs/ABLATION/VARIANT/seed-N`): every file name in it is
//! spelled here and nowhere else. Its records and the policy that decides whether a run starts,
//! resumes or is reused are written in terms of this type ([`crate::records`],
//! [`crate::runner::run`]).
//!
//! What a run's folder holds, in the order a run writes it:
//! - `config.ron`: the resolved [`RunSpec`], first of all; `env.json`: the build, backend,
//!   devices and pass split ([`crate::records::EnvRecord`]).
//! - `progress.log`: progress lines; `experiment.log`, `train/` and `valid/`: burn-train's own
//!   log and per-epoch metric files (their names are burn-train's); `epochs.json`: the epoch
//!   records that select the best checkpoint; `checkpoint/`: burn-train's checkpoints, named by it.
//! - At the end: `metrics.csv` (one row per epoch), `model.safetensors` (the trained adapter
//!   and decoder), `test_scores.csv` (each test sample's score), `result.json` (the outcome, with digests of the [`RunDir::SEALED`] files).
//! - Later, from `eval`: `per_sample-SPLIT-PROTOCOL.csv`.
//!
//! Beside the folder: `seed-N.log` (the output of a run trained in its own process) and its
//! lock file ([`crate::util::lock::lock_path`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::RunSpec;
use crate::config::recipe::check_dir_name;
use crate::util::atomic_file::write_atomic;
use crate::util::cache::file_digest;
use crate::util::lock::lock_path;

/// A run folder's name is this and its seed.
const SEED: &str = "seed-";
const CONFIG: &str = "config.ron";
const ENV: &str = "env.json";
const PROGRESS: &str = "progress.log";
const EPOCHS: &str = "epochs.json";
const METRICS_CSV: &str = "metrics.csv";
const MODEL: &str = "model.safetensors";
const RESULT: &str = "result.json";
const TEST_SCORES: &str = "test_scores.csv";
/// Where burn-train's file checkpointer writes, below the directory it is given.
const CHECKPOINTS: &str = "checkpoint";
/// burn-train's own log and its per-split metric folders.
const BURN_LOG: &str = "experiment.log";
const TRAIN_LOGS: &str = "train";
const VALID_LOGS: &str = "valid";

/// What a run writes into its folder before its first epoch ends: its records and burn-train's
/// log and per-split folders (and temporary files of an interrupted write, `.NAME.tmp-PID`).
const FIRST_RECORDS: [&str; 6] = [CONFIG, ENV, PROGRESS, BURN_LOG, TRAIN_LOGS, VALID_LOGS];

/// The folder of a variant's runs, one per seed.
fn variant_dir(results: &Path, ablation: &str, variant: &str) -> PathBuf {
    RunDir::runs_root(results).join(ablation).join(variant)
}

/// One run's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The files of a finished run that its results rest on: whatever later reads the run
    /// (`eval`, `figures`, `segment`, `explain`) checks them against the digests in
    /// `result.json`.
    pub const SEALED: [&str; 3] = [CONFIG, MODEL, TEST_SCORES];

    /// The folder of a variant's run with `seed` under `results` (`ablation` and `variant`
    /// checked by [`check_dir_name`] where they were read).
    pub fn new(results: &Path, ablation: &str, variant: &str, seed: u64) -> Self {
        debug_assert!(
            check_dir_name("ablation", ablation).is_ok()
                && check_dir_name("variant", variant).is_ok(),
            "unchecked names {ablation:?} / {variant:?}"
        );
        Self::at(variant_dir(results, ablation, variant).join(format!("{SEED}{seed}")))
    }

    /// Where the runs of every ablation live under `results` (`RESULTS/runs`).
    pub fn runs_root(results: &Path) -> PathBuf {
        results.join("runs")
    }

    /// Whether `results` holds a folder of runs of the ablation `name`.
    pub fn ablation_has_runs(results: &Path, name: &str) -> bool {
        Self::runs_root(results).join(name).is_dir()
    }

    /// The seeds of a variant's runs on disk under `results`, in order: the folders named as a
    /// run of that seed names its own (a copy named `seed-00` is not another seed).
    pub fn seeds(results: &Path, ablation: &str, variant: &str) -> Vec<u64> {
        let mut seeds: Vec<u64> = std::fs::read_dir(variant_dir(results, ablation, variant))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_str()?.to_string();
                        let seed: u64 = name.strip_prefix(SEED)?.parse().ok()?;
                        (name == format!("{SEED}{seed}")).then_some(seed)
                    })
                    .collect()
            })
            .unwrap_or_default();
        seeds.sort_unstable();
        seeds
    }

    /// The folder of the run `spec` describes.
    pub fn of(results: &Path, spec: &RunSpec) -> Self {
        Self::new(results, &spec.ablation, &spec.variant, spec.seed)
    }

    /// A run folder a user named (`eval RUN_DIR`).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// `config.ron`: the resolved run spec.
    pub fn config(&self) -> PathBuf {
        self.path.join(CONFIG)
    }

    /// `env.json`: the environment record.
    pub fn env(&self) -> PathBuf {
        self.path.join(ENV)
    }

    /// `progress.log`: the run's progress lines.
    pub fn progress_log(&self) -> PathBuf {
        self.path.join(PROGRESS)
    }

    /// `epochs.json`: the per-epoch records training selects its model by.
    pub fn epochs(&self) -> PathBuf {
        self.path.join(EPOCHS)
    }

    /// burn-train's checkpoint folder.
    pub fn checkpoints(&self) -> PathBuf {
        self.path.join(CHECKPOINTS)
    }

    /// burn-train's metric files of the training split, one folder per epoch.
    pub fn train_logs(&self) -> PathBuf {
        self.path.join(TRAIN_LOGS)
    }

    /// `metrics.csv`: one row per epoch.
    pub fn metrics_csv(&self) -> PathBuf {
        self.path.join(METRICS_CSV)
    }

    /// `model.safetensors`: the trained adapter and decoder.
    pub fn model(&self) -> PathBuf {
        self.path.join(MODEL)
    }

    /// `test_scores.csv`: each test sample's score, written when the run finishes.
    pub fn test_scores(&self) -> PathBuf {
        self.path.join(TEST_SCORES)
    }

    /// `per_sample-SPLIT-PROTOCOL.csv`: each sample's score, written by `eval`.
    pub fn per_sample_csv(&self, split: &str, protocol: &str) -> PathBuf {
        self.path.join(format!("per_sample-{split}-{protocol}.csv"))
    }

    /// `result.json`: how the run ended.
    pub fn result(&self) -> PathBuf {
        self.path.join(RESULT)
    }

    /// The output of the run when it trains in a process of its own (`seed-N.log`, beside the
    /// folder).
    pub fn process_log(&self) -> PathBuf {
        self.path.with_extension("log")
    }

    /// The lock one training process holds on the folder (beside it, so `--restart` can remove
    /// the folder).
    pub fn lock(&self) -> PathBuf {
        lock_path(&self.path)
    }

    /// Whether the run has ended (finished or diverged): it wrote `result.json`.
    pub fn has_ended(&self) -> bool {
        self.result().is_file()
    }

    /// The text of `config.ron` (empty when it is missing or unreadable).
    pub fn saved_config(&self) -> String {
        std::fs::read_to_string(self.config()).unwrap_or_default()
    }

    /// Reads `config.ron`.
    pub fn read_spec(&self) -> anyhow::Result<RunSpec> {
        let path = self.config();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        RunSpec::parse(&text, &path)
    }

    /// Writes `config.ron` (atomically), creating the folder.
    pub fn write_config(&self, text: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.path)
            .with_context(|| format!("creating {}", self.path.display()))?;
        write_atomic(&self.config(), text.as_bytes())
    }

    /// A folder left by a run that failed before its first epoch ended (unreadable data, say):
    /// only its records, nothing to resume or lose.
    pub fn never_trained(&self) -> bool {
        [self.epochs(), self.checkpoints(), self.result()]
            .iter()
            .all(|f| !f.exists())
    }

    /// Why the folder must be left as it is (`None`: it may be removed). Without `restart` only
    /// a folder of nothing but the records a run writes before its first epoch ends may go (a
    /// run that never trained); with it, any run folder (one with the `config.ron` every run
    /// writes first). Anything else is not diffris's to delete: a folder of other files that
    /// happens to sit at the run's path.
    pub fn keep_reason(&self, restart: bool) -> anyhow::Result<Option<String>> {
        let dir = &self.path;
        if restart && self.config().is_file() {
            return Ok(None);
        }
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let name = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            let temporary = name.starts_with('.') && name.contains(".tmp-");
            if !temporary && !FIRST_RECORDS.contains(&name.as_str()) {
                return Ok(Some(if restart {
                    format!("it holds `{name}` and no {CONFIG}, so it is not a run folder")
                } else {
                    format!(
                        "it holds `{name}`, which a run that never trained does not write \
                         (without --restart only such a run is removed)"
                    )
                }));
            }
        }
        Ok(None)
    }

    /// The digests of the [`Self::SEALED`] files.
    pub fn seal(&self) -> anyhow::Result<BTreeMap<String, String>> {
        Self::SEALED
            .iter()
            .map(|f| Ok((f.to_string(), file_digest(&self.path.join(f))?)))
            .collect()
    }

    /// Checks the folder's files against the digests its `result.json` recorded.
    pub fn check_seal(&self, recorded: &BTreeMap<String, String>) -> anyhow::Result<()> {
        for (file, digest) in recorded {
            let path = self.path.join(file);
            let now = file_digest(&path)?;
            anyhow::ensure!(
                &now == digest,
                "{} changed after the run finished (its result.json recorded {digest}, the file \
                 is now {now}): the results no longer describe it; restore it, or train the run \
                 again with --restart",
                path.display()
            );
        }
        Ok(())
    }
}
