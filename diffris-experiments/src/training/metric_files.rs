//! The per-iteration metric logs of a run (`train/epoch-N/NAME.log`, `valid/epoch-N/NAME.log`:
//! one burn-train serialized entry per line, `value` or `value,count`), written by a logger whose
//! write errors stop the run with a message naming the file.
//!
//! burn-train 0.21's `FileMetricLogger` writes the same files but `expect`s every write: on a
//! full disk its logging thread panics, and the panic cascades through the event-store and
//! processor threads into the main thread. [`MetricFiles`] replaces it (burn-train registers its
//! own only when no logger is given); on the first failed write it calls the run's
//! [`Interrupter`] and writes nothing more, so training ends at the next iteration and the
//! command reports the failed file.
//!
//! It also numbers the epochs itself. burn-train's event store hands loggers an epoch counter
//! that starts at 1 for each split and follows the end-of-epoch events after that; on a resume
//! from epoch K its first epoch is K + 1 but is logged as 1, so burn-train's logger overwrote
//! epoch 1's files with epoch K + 1's entries and wrote none for K + 1 (the training-loss curve
//! of a resumed run stopped at the gap). [`MetricFiles`] is told K and counts from there.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::train::Interrupter;
use burn::train::logger::MetricLogger;
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};

/// Writes every logged metric entry under `dir`; stops the run on the first failed write.
pub struct MetricFiles {
    dir: PathBuf,
    names: HashMap<MetricId, String>,
    /// The files of the current epochs, by path (each created, so emptied, once: a resumed
    /// epoch replaces what a killed process left of it).
    open: HashMap<PathBuf, File>,
    /// The epoch being logged, per split: K + 1 at first, then one after each ended epoch.
    epochs: HashMap<String, usize>,
    /// K: the epoch this training resumes after (0 for a fresh run).
    start: usize,
    stop: Interrupter,
    failed: bool,
}

impl MetricFiles {
    /// Logs under `dir` (the run directory) from epoch `start + 1` on; a failed write stops the
    /// run through `stop`.
    pub fn new(dir: &Path, start: usize, stop: Interrupter) -> Self {
        Self {
            dir: dir.to_path_buf(),
            names: HashMap::new(),
            open: HashMap::new(),
            epochs: HashMap::new(),
            start,
            stop,
            failed: false,
        }
    }

    /// `DIR/SPLIT[/TAG]/epoch-N/NAME.log` (burn-train's layout: spaces in names become `_`).
    fn path(&self, name: &str, epoch: usize, split: &Split) -> PathBuf {
        let mut dir = self.dir.join(split.to_string());
        if let Split::Test(Some(tag)) = split {
            dir = dir.join(tag.trim().replace(' ', "-").to_lowercase());
        }
        epoch_file(&dir, epoch, name)
    }

    /// Appends `line` to `path`, which is created (emptied) the first time this epoch.
    fn append(&mut self, path: PathBuf, line: &str) -> std::io::Result<()> {
        let file = match self.open.entry(path) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                if let Some(parent) = e.key().parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let file = File::create(e.key())?;
                e.insert(file)
            }
        };
        file.write_all(format!("{line}\n").as_bytes())
    }
}

/// The file of metric `name` in epoch `epoch` below a split's folder: `epoch-N/NAME.log`
/// (burn-train's layout: spaces in names become `_`).
pub fn epoch_file(split_dir: &Path, epoch: usize, name: &str) -> PathBuf {
    split_dir
        .join(format!("epoch-{epoch}"))
        .join(format!("{}.log", name.replace(' ', "_")))
}

impl MetricLogger for MetricFiles {
    /// Logs one iteration's entries of `split` (burn-train's `epoch` is not used: see the
    /// module documentation).
    fn log(&mut self, update: MetricsUpdate, _epoch: usize, split: &Split) {
        if self.failed {
            return;
        }
        let epoch = *self
            .epochs
            .entry(split.to_string())
            .or_insert(self.start + 1);
        let entries = update
            .entries
            .iter()
            .chain(update.entries_numeric.iter().map(|n| &n.entry));
        for entry in entries {
            let Some(name) = self.names.get(&entry.metric_id) else {
                continue;
            };
            let path = self.path(name, epoch, split);
            if let Err(e) = self.append(path.clone(), &entry.serialized_entry.serialized) {
                self.failed = true;
                self.stop.stop(Some(&format!(
                    "writing the metric log {}: {e}",
                    path.display()
                )));
                return;
            }
        }
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        let path = self.path(name, epoch, split);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| NumericEntry::deserialize(l).map_err(|e| format!("{}: {e}", path.display())))
            .collect()
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }

    /// The split's next entries belong to the epoch after `summary`'s; its files are closed.
    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        let split = summary.split.to_string();
        let prefix = self.dir.join(&split);
        self.open.retain(|path, _| !path.starts_with(&prefix));
        self.epochs.insert(split, summary.epoch_number + 1);
    }
}
