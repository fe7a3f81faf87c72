//! Training on burn-train's supervised learner: the train/inference steps of DiffRIS on cached
//! encoder outputs, the epoch metrics (loss, oIoU, mIoU) that drive best-checkpoint selection,
//! the polynomial learning-rate decay, and a progress-bar renderer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::optim::lr_scheduler::LrScheduler;
use burn::record::DefaultRecorder;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::train::checkpoint::{
    ComposedCheckpointingStrategy, KeepLastNCheckpoints, MetricCheckpointingStrategy,
};
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{
    Adaptor, ItemLazy, Metric, MetricAttributes, MetricDefinition, MetricMetadata, MetricName,
    Numeric, NumericAttributes, NumericEntry, SerializedEntry,
};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use burn::train::{
    InferenceStep, Learner, LearnerSummary, SupervisedTraining, TrainOutput, TrainStep,
};
use diffris_model::diffris::DiffRis;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::encoded::{EncodedBatch, EncodedSplit, EpochLoader};
use crate::recipe::{SelectBy, TrainSpec};
use crate::tensor_file::write_atomic;

/// The trained module: DiffRIS (whose frozen parts are not parameters).
#[derive(Module, Debug)]
pub struct Trainee<B: Backend> {
    pub model: DiffRis<B>,
}

/// Loss and per-sample intersection/union (at the network size) of one batch.
pub struct SegOutput<B: Backend> {
    pub loss: Tensor<B, 1>,
    pub intersection: Tensor<B, 1>,
    pub union: Tensor<B, 1>,
}

/// [`SegOutput`] as plain numbers, for the metrics thread.
#[derive(Clone, Debug, Default)]
pub struct SegStats {
    pub loss: f64,
    pub intersection: Vec<f64>,
    pub union: Vec<f64>,
}

impl<B: Backend> ItemLazy for SegOutput<B> {
    type ItemSync = SegStats;

    fn sync(self) -> SegStats {
        let v = |t: Tensor<B, 1>| t.into_data().iter::<f64>().collect::<Vec<f64>>();
        SegStats {
            loss: v(self.loss)[0],
            intersection: v(self.intersection),
            union: v(self.union),
        }
    }
}

impl Adaptor<SegStats> for SegStats {
    fn adapt(&self) -> SegStats {
        self.clone()
    }
}

/// Per-sample `(I, U)` of `logits > 0` against `mask`.
///
/// # Shapes
/// `[B, 1, H, W]` both -> (`[B]`, `[B]`).
pub fn intersection_union<B: Backend>(
    logits: Tensor<B, 4>,
    mask: Tensor<B, 4>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let b = logits.dims()[0];
    let pred = logits.greater_elem(0.0).float();
    let inter = (pred.clone() * mask.clone())
        .reshape([b as i32, -1])
        .sum_dim(1)
        .reshape([b]);
    let total = (pred + mask)
        .reshape([b as i32, -1])
        .sum_dim(1)
        .reshape([b]);
    (inter.clone(), total - inter)
}

impl<B: Backend> Trainee<B> {
    fn seg_step(&self, batch: EncodedBatch<B>, training: bool) -> (Tensor<B, 1>, SegOutput<B>) {
        let out = self
            .model
            .forward_encoded(batch.latent, batch.text, batch.eos, training);
        let loss = self.model.loss(&out, batch.mask.clone());
        let (intersection, union) = intersection_union(out.logits.detach(), batch.mask);
        let output = SegOutput {
            loss: loss.clone().detach(),
            intersection,
            union,
        };
        (loss, output)
    }
}

impl<B: AutodiffBackend> TrainStep for Trainee<B> {
    type Input = EncodedBatch<B>;
    type Output = SegOutput<B>;

    fn step(&self, batch: EncodedBatch<B>) -> TrainOutput<SegOutput<B>> {
        let (loss, output) = self.seg_step(batch, true);
        TrainOutput::new(self, loss.backward(), output)
    }
}

impl<B: Backend> InferenceStep for Trainee<B> {
    type Input = EncodedBatch<B>;
    type Output = SegOutput<B>;

    fn step(&self, batch: EncodedBatch<B>) -> SegOutput<B> {
        self.seg_step(batch, false).1
    }
}

/// Sums of one split and epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    pub loss_sum: f64,
    pub batches: usize,
    pub intersection: f64,
    pub union: f64,
    pub iou_sum: f64,
    pub samples: usize,
}

impl EpochSums {
    pub fn loss(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.loss_sum / self.batches as f64
        }
    }

    pub fn oiou(&self) -> f64 {
        if self.union == 0.0 {
            0.0
        } else {
            100.0 * self.intersection / self.union
        }
    }

    pub fn miou(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            100.0 * self.iou_sum / self.samples as f64
        }
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
        e.loss_sum += stats.loss;
        e.batches += 1;
        for (&i, &u) in stats.intersection.iter().zip(&stats.union) {
            e.intersection += i;
            e.union += u;
            e.iou_sum += if u > 0.0 { i / u } else { 0.0 };
            e.samples += 1;
        }
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
        let (i, u): (f64, f64) = (s.intersection.iter().sum(), s.union.iter().sum());
        let ious: f64 = s
            .intersection
            .iter()
            .zip(&s.union)
            .map(|(&i, &u)| if u > 0.0 { i / u } else { 0.0 })
            .sum();
        let n = s.intersection.len();
        self.sums.loss_sum += s.loss;
        self.sums.batches += 1;
        self.sums.intersection += i;
        self.sums.union += u;
        self.sums.iou_sum += ious;
        self.sums.samples += n;
        // Each entry weighs itself so the logged epoch mean is exact: the loss per batch, mIoU
        // per sample, oIoU per union pixel.
        let (value, count) = match self.kind {
            RisMetricKind::Loss => (s.loss, 1),
            RisMetricKind::Miou => (if n == 0 { 0.0 } else { 100.0 * ious / n as f64 }, n.max(1)),
            RisMetricKind::Oiou => (
                if u == 0.0 { 0.0 } else { 100.0 * i / u },
                (u as usize).max(1),
            ),
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

/// `lr = base * (1 - t / total)^power`, stepped once per iteration (burn-train has no
/// polynomial scheduler).
#[derive(Clone, Debug)]
pub struct PolyLr {
    pub base: f64,
    pub power: f64,
    pub total: usize,
    pub iteration: usize,
}

impl LrScheduler for PolyLr {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let t = self.iteration.min(self.total) as f64 / self.total.max(1) as f64;
        self.iteration += 1;
        self.base * (1.0 - t).powf(self.power)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.iteration
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.iteration = record;
        self
    }
}

/// A progress bar over all training iterations.
pub struct BarRenderer {
    bar: ProgressBar,
    epochs: usize,
    per_epoch: usize,
}

impl BarRenderer {
    pub fn new(bar: ProgressBar, epochs: usize, per_epoch: usize) -> Self {
        Self {
            bar,
            epochs,
            per_epoch,
        }
    }
}

impl MetricsRendererTraining for BarRenderer {
    fn update_train(&mut self, _state: MetricState) {}

    fn update_valid(&mut self, _state: MetricState) {}

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let done = item.progress.map_or(0, |p| p.items_processed);
        self.bar
            .set_position(((epoch.saturating_sub(1)) * self.per_epoch + done) as u64);
        self.bar
            .set_message(format!("epoch {epoch}/{}", self.epochs));
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        self.bar.set_message(format!(
            "epoch {}/{} (validating)",
            item.global_progress.items_processed, self.epochs
        ));
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for BarRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for BarRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, _definition: MetricDefinition) {}
}

/// The outcome of training.
pub struct Trained<B: Backend> {
    /// The model of the best validation epoch.
    pub model: Trainee<B>,
    pub best_epoch: usize,
    pub log: EpochLog,
}

/// The last epoch with a saved checkpoint in `dir/checkpoint`, if any.
pub fn last_checkpoint(dir: &Path) -> Option<usize> {
    std::fs::read_dir(dir.join("checkpoint"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("model-")?
                .strip_suffix(".mpk")?
                .parse()
                .ok()
        })
        .max()
}

/// Trains `model` for `spec.epochs` epochs (or until `stop_after`), resuming from the last
/// checkpoint in `dir` when `resume`, and returns the best-on-validation model.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    model: Trainee<B>,
    train_data: Arc<EncodedSplit>,
    val_data: Arc<EncodedSplit>,
    spec: &TrainSpec,
    seed: u64,
    dir: &Path,
    resume: bool,
    stop_after: Option<usize>,
    device: &B::Device,
    bar: ProgressBar,
) -> anyhow::Result<Trained<B::InnerBackend>> {
    let per_epoch = train_data.len().div_ceil(spec.batch_size);
    let start = if resume { last_checkpoint(dir) } else { None };
    let log = EpochLog::persisted(dir.join("epochs.json"))?;
    log.truncate(start.unwrap_or(0));
    let train_loader = Arc::new(EpochLoader::<B>::new(
        train_data,
        spec.batch_size,
        Some(seed),
        start.unwrap_or(0),
        device.clone(),
    ));
    let val_loader = Arc::new(EpochLoader::<B::InnerBackend>::new(
        val_data,
        spec.batch_size,
        None,
        0,
        device.clone(),
    ));
    let select = RisMetric::new(
        match spec.select_by {
            SelectBy::Miou => RisMetricKind::Miou,
            SelectBy::Oiou => RisMetricKind::Oiou,
        },
        "valid",
        log.clone(),
    );
    let strategy = ComposedCheckpointingStrategy::builder()
        .add(KeepLastNCheckpoints::new(1))
        .add(MetricCheckpointingStrategy::new(
            &select,
            Aggregate::Mean,
            Direction::Highest,
            Split::Valid,
        ))
        .build();
    bar.set_length((spec.epochs * per_epoch) as u64);
    let epochs = stop_after.unwrap_or(spec.epochs).min(spec.epochs);
    let mut training = SupervisedTraining::new(dir, train_loader, val_loader)
        .metric_train_numeric(RisMetric::new(RisMetricKind::Loss, "train", log.clone()))
        .metric_train_numeric(RisMetric::new(RisMetricKind::Miou, "train", log.clone()))
        .metric_valid_numeric(RisMetric::new(RisMetricKind::Loss, "valid", log.clone()))
        .metric_valid_numeric(RisMetric::new(RisMetricKind::Oiou, "valid", log.clone()))
        .metric_valid_numeric(select)
        .with_file_checkpointer(DefaultRecorder::new())
        .with_checkpointing_strategy(strategy)
        .with_application_logger(None)
        .renderer(BarRenderer::new(bar.clone(), spec.epochs, per_epoch))
        .num_epochs(epochs);
    if let Some(epoch) = start {
        training = training.checkpoint(epoch);
    }
    let optim = AdamWConfig::new()
        .with_weight_decay(spec.weight_decay as f32)
        .with_epsilon(1e-8)
        .init();
    let scheduler = PolyLr {
        base: spec.lr,
        power: spec.lr_power,
        total: spec.epochs * per_epoch,
        iteration: 0,
    };
    let result = training.launch(Learner::new(model, optim, scheduler));
    bar.finish_and_clear();

    let valid = log.split("valid");
    let best_epoch = valid
        .iter()
        .max_by(|a, b| {
            let key = |s: &EpochSums| match spec.select_by {
                SelectBy::Miou => s.miou(),
                SelectBy::Oiou => s.oiou(),
            };
            // Highest value; on ties the earlier epoch.
            key(a.1).total_cmp(&key(b.1)).then(b.0.cmp(a.0))
        })
        .map(|(e, _)| *e)
        .ok_or_else(|| anyhow::anyhow!("training produced no validation epoch"))?;
    let model = result
        .model
        .load_file(
            dir.join("checkpoint").join(format!("model-{best_epoch}")),
            &DefaultRecorder::new(),
            device,
        )
        .map_err(|e| anyhow::anyhow!("loading the best checkpoint (epoch {best_epoch}): {e}"))?;
    if let Some(file) = &log.file {
        let map = log.inner.lock().expect("epoch log lock").clone();
        write_atomic(file, serde_json::to_string_pretty(&map)?.as_bytes())?;
    }
    Ok(Trained {
        model,
        best_epoch,
        log,
    })
}
