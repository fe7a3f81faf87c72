//! Per-epoch sums (loss, intersection, union, per-sample IoU) of the training and validation
//! splits: the burn-train metric that feeds them, the log kept in `epochs.json` for resume, and
//! `metrics.csv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::divergence::DivergenceWatch;
use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};
use serde::{Deserialize, Serialize};

use crate::config::recipe::SelectBy;
use crate::eval::metrics::MetricAccumulator;
use crate::training::step::SegStats;
use crate::util::atomic_file::write_atomic;

/// Sums of one split and epoch: the loss per batch, and every sample scored by the same
/// accumulator the evaluation uses ([`MetricAccumulator`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    pub loss_sum: f64,
    pub batches: usize,
    pub scores: MetricAccumulator,
}

impl EpochSums {
    /// The sums of one batch.
    pub fn of_batch(stats: &SegStats) -> Self {
        let mut sums = Self::default();
        sums.add(stats);
        sums
    }

    /// Adds one batch: its loss, and the intersection and union of each of its samples.
    pub fn add(&mut self, stats: &SegStats) {
        self.loss_sum += stats.loss;
        self.batches += 1;
        for (&i, &u) in stats.intersection.iter().zip(&stats.union) {
            // Pixel counts: whole numbers held in f32 tensors (exact below 2^24 pixels).
            self.scores.add_counts(i.round() as u64, u.round() as u64);
        }
    }

    /// Mean loss per batch.
    pub fn loss(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.loss_sum / self.batches as f64
        }
    }

    pub fn oiou(&self) -> f64 {
        self.scores.summary().oiou
    }

    pub fn miou(&self) -> f64 {
        self.scores.summary().miou
    }

    /// Samples scored.
    pub fn samples(&self) -> u64 {
        self.scores.samples()
    }

    /// Union pixels summed over the samples.
    pub fn union(&self) -> u64 {
        self.scores.union()
    }
}

/// Per-epoch sums of both splits, shared between the metrics thread and the runner, and kept
/// in `epochs.json` so a resumed run keeps the history of the epochs it did not run.
#[derive(Clone, Default)]
pub struct EpochLog {
    inner: Arc<Mutex<BTreeMap<String, BTreeMap<usize, EpochSums>>>>,
    file: Option<PathBuf>,
}

impl EpochLog {
    /// A log persisted to `file` (read back if it exists).
    pub fn persisted(file: PathBuf) -> anyhow::Result<Self> {
        let map = if file.is_file() {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
            serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {e} (a damaged epoch record, or one of a run that diverged; rerun with \
                     --restart)",
                    file.display()
                )
            })?
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(map)),
            file: Some(file),
        })
    }

    /// Adds one batch of `split` in `epoch` (and writes the file, best effort).
    pub(crate) fn record(&self, split: &str, epoch: usize, stats: &SegStats) {
        let mut map = self.inner.lock().expect("epoch log lock");
        let e = map
            .entry(split.to_string())
            .or_default()
            .entry(epoch)
            .or_default();
        e.add(stats);
        if let Some(file) = &self.file
            && let Ok(json) = serde_json::to_string_pretty(&*map)
        {
            // Best effort mid-training; the runner writes the final log itself and reports errors.
            let _ = write_atomic(file, json.as_bytes());
        }
    }

    /// Sums per epoch of `split`.
    pub fn split(&self, split: &str) -> BTreeMap<usize, EpochSums> {
        self.inner
            .lock()
            .expect("epoch log lock")
            .get(split)
            .cloned()
            .unwrap_or_default()
    }

    /// Writes the log to its file (a log without one keeps nothing).
    pub fn save(&self) -> anyhow::Result<()> {
        if let Some(file) = &self.file {
            let map = self.inner.lock().expect("epoch log lock").clone();
            write_atomic(file, serde_json::to_string_pretty(&map)?.as_bytes())?;
        }
        Ok(())
    }

    /// `metrics.csv`: one row per epoch with the training and validation numbers.
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let train = self.split("train");
        let valid = self.split("valid");
        let mut out = String::from("epoch,train_loss,train_miou,val_loss,val_miou,val_oiou\n");
        for (epoch, t) in &train {
            let v = valid.get(epoch).cloned().unwrap_or_default();
            out.push_str(&format!(
                "{epoch},{:.6},{:.4},{:.6},{:.4},{:.4}\n",
                t.loss(),
                t.miou(),
                v.loss(),
                v.miou(),
                v.oiou()
            ));
        }
        write_atomic(path, out.as_bytes())
    }

    /// Drops the epochs after `last` (a resumed run recomputes them).
    pub fn truncate(&self, last: usize) {
        let mut map = self.inner.lock().expect("epoch log lock");
        for epochs in map.values_mut() {
            epochs.retain(|&e, _| e <= last);
        }
    }
}

/// The epoch whose validation sums are best by `by`; on ties the earliest (the checkpoint the
/// paper's protocol would keep first). `None` when no epoch was validated.
pub fn best_epoch(valid: &BTreeMap<usize, EpochSums>, by: SelectBy) -> Option<usize> {
    let key = |s: &EpochSums| match by {
        SelectBy::Miou => s.miou(),
        SelectBy::Oiou => s.oiou(),
    };
    valid
        .iter()
        .max_by(|a, b| key(a.1).total_cmp(&key(b.1)).then(b.0.cmp(a.0)))
        .map(|(e, _)| *e)
}

/// Which value a [`RisMetric`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RisMetricKind {
    Loss,
    Miou,
    Oiou,
}

/// Loss, mIoU or oIoU over an epoch; every update also goes to the [`EpochLog`] (only the loss
/// instance records, so each batch is counted once).
#[derive(Clone)]
pub struct RisMetric {
    kind: RisMetricKind,
    split: &'static str,
    log: EpochLog,
    records: bool,
    /// Stops training at a non-finite loss (the training loss instance).
    divergence: Option<DivergenceWatch>,
    sums: EpochSums,
    last: f64,
}

impl RisMetric {
    pub fn new(kind: RisMetricKind, split: &'static str, log: EpochLog) -> Self {
        Self {
            kind,
            split,
            log,
            records: kind == RisMetricKind::Loss,
            divergence: None,
            sums: EpochSums::default(),
            last: 0.0,
        }
    }

    /// Stops the training through `stop` when a batch's loss is not finite; the message names
    /// the epoch and the pass.
    pub fn stopping_on_divergence(mut self, watch: DivergenceWatch) -> Self {
        self.divergence = Some(watch);
        self
    }

    fn current(&self) -> f64 {
        match self.kind {
            RisMetricKind::Loss => self.sums.loss(),
            RisMetricKind::Miou => self.sums.miou(),
            RisMetricKind::Oiou => self.sums.oiou(),
        }
    }
}

impl Metric for RisMetric {
    type Input = SegStats;

    fn name(&self) -> MetricName {
        Arc::new(
            match self.kind {
                RisMetricKind::Loss => "Loss",
                RisMetricKind::Miou => "mIoU",
                RisMetricKind::Oiou => "oIoU",
            }
            .to_string(),
        )
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: self.kind != RisMetricKind::Loss,
        }
        .into()
    }

    fn update(&mut self, s: &SegStats, meta: &MetricMetadata) -> SerializedEntry {
        if self.records {
            self.log
                .record(self.split, meta.global_progress.items_processed, s);
        }
        if let Some(watch) = &self.divergence {
            watch.check(
                self.split,
                meta.global_progress.items_processed,
                meta.iteration.unwrap_or(0),
                s.loss,
            );
        }
        let batch = EpochSums::of_batch(s);
        self.sums.add(s);
        // Each entry weighs itself so the logged epoch mean is exact: the loss per batch, mIoU
        // per sample, oIoU per union pixel.
        let (value, count) = match self.kind {
            RisMetricKind::Loss => (s.loss, 1),
            RisMetricKind::Miou => (batch.miou(), (batch.samples() as usize).max(1)),
            RisMetricKind::Oiou => (batch.oiou(), (batch.union() as usize).max(1)),
        };
        self.last = value;
        SerializedEntry::new(
            format!("epoch {:.3} - batch {value:.3}", self.current()),
            NumericEntry::Aggregated {
                aggregated_value: value,
                count,
            }
            .serialize(),
        )
    }

    fn clear(&mut self) {
        self.sums = EpochSums::default();
    }
}

impl Numeric for RisMetric {
    fn value(&self) -> NumericEntry {
        NumericEntry::Value(self.last)
    }

    fn running_value(&self) -> NumericEntry {
        NumericEntry::Value(self.current())
    }
}

#[cfg(test)]
mod tests {
    use burn::data::dataloader::Progress;

    use super::*;

    fn stats(loss: f64, pairs: &[(f64, f64)]) -> SegStats {
        SegStats {
            loss,
            intersection: pairs.iter().map(|p| p.0).collect(),
            union: pairs.iter().map(|p| p.1).collect(),
        }
    }

    fn meta() -> MetricMetadata {
        MetricMetadata {
            progress: Progress::new(1, 2),
            global_progress: Progress::new(1, 1),
            iteration: None,
            lr: None,
        }
    }

    /// `(value, count)` of a logged entry.
    fn entry(e: &SerializedEntry) -> (f64, usize) {
        match NumericEntry::deserialize(&e.serialized).unwrap() {
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => (aggregated_value, count),
            other => panic!("{other:?}"),
        }
    }

    /// Two batches of different sizes: one sample of IoU 1/2 (I = 1, U = 2), then three of IoU 1
    /// (I = U = 1). By hand: mIoU = (0.5 + 3) / 4 = 87.5, oIoU = (1 + 3) / (2 + 3) = 80, mean
    /// loss (1 + 3) / 2 = 2.
    #[test]
    fn logged_entries_weigh_themselves_so_their_mean_is_the_epoch_value() {
        let batches = [stats(1.0, &[(1.0, 2.0)]), stats(3.0, &[(1.0, 1.0); 3])];
        for (kind, expected) in [
            (RisMetricKind::Miou, 87.5),
            (RisMetricKind::Oiou, 80.0),
            (RisMetricKind::Loss, 2.0),
        ] {
            let log = EpochLog::default();
            let mut metric = RisMetric::new(kind, "valid", log.clone());
            let (mut weighted, mut total) = (0.0, 0usize);
            for b in &batches {
                let (value, count) = entry(&metric.update(b, &meta()));
                weighted += value * count as f64;
                total += count;
            }
            // burn-train's epoch mean of the entries (sum of value x count over the counts).
            assert!(
                (weighted / total as f64 - expected).abs() < 1e-12,
                "{kind:?}"
            );
            let NumericEntry::Value(running) = metric.running_value() else {
                panic!()
            };
            assert!((running - expected).abs() < 1e-12, "{kind:?}");
        }
        // Only the loss metric writes the log, once per batch.
        let log = EpochLog::default();
        for kind in [RisMetricKind::Loss, RisMetricKind::Miou] {
            let mut m = RisMetric::new(kind, "valid", log.clone());
            for b in &batches {
                m.update(b, &meta());
            }
        }
        let epoch = &log.split("valid")[&1];
        assert_eq!((epoch.batches, epoch.samples()), (2, 4));
        assert!((epoch.miou() - 87.5).abs() < 1e-12 && (epoch.oiou() - 80.0).abs() < 1e-12);
    }

    #[test]
    fn the_best_epoch_is_the_highest_and_the_earliest_of_ties() {
        let sums = |ious: &[(f64, f64)]| EpochSums::of_batch(&stats(0.0, ious));
        let valid: BTreeMap<usize, EpochSums> = [
            (1, sums(&[(1.0, 4.0)])),              // mIoU 25, oIoU 25
            (2, sums(&[(1.0, 2.0)])),              // mIoU 50, oIoU 50
            (3, sums(&[(2.0, 4.0)])),              // mIoU 50 (a tie with epoch 2), oIoU 50
            (4, sums(&[(0.0, 1.0), (9.0, 10.0)])), // mIoU 45, oIoU 9/11 = 81.8
        ]
        .into_iter()
        .collect();
        assert_eq!(best_epoch(&valid, SelectBy::Miou), Some(2));
        assert_eq!(best_epoch(&valid, SelectBy::Oiou), Some(4));
        assert_eq!(best_epoch(&BTreeMap::new(), SelectBy::Miou), None);
    }
}
