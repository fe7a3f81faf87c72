//! Per-epoch sums (loss, intersection, union, per-sample IoU) of the training and validation
//! splits: the burn-train metric that feeds them, the log kept in `epochs.json` for resume, and
//! `metrics.csv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::train::metric::{
    Metric, MetricAttributes, MetricMetadata, MetricName, Numeric, NumericAttributes, NumericEntry,
    SerializedEntry,
};
use serde::{Deserialize, Serialize};

use crate::metrics::MetricAccumulator;
use crate::tensor_file::write_atomic;
use crate::training::step::SegStats;

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
            serde_json::from_str(&std::fs::read_to_string(&file)?)?
        } else {
            BTreeMap::new()
        };
        Ok(Self {
            inner: Arc::new(Mutex::new(map)),
            file: Some(file),
        })
    }

    fn record(&self, split: &str, epoch: usize, stats: &SegStats) {
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
            sums: EpochSums::default(),
            last: 0.0,
        }
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
