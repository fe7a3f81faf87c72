//! Training on burn-train's supervised learner: the steps ([`step`]), the epoch metrics that
//! drive best-checkpoint selection ([`epoch_log`]), the learning-rate decay ([`schedule`]), the
//! batches of each epoch ([`loader`]), several devices ([`multi_device`] and [`ddp`], with the
//! order of their forwards in [`turnstile`](crate::device::turnstile)), a progress renderer ([`renderer`]) and the entry
//! point [`train`].

pub mod checkpoint;
pub mod ddp;
pub mod divergence;
pub mod ema;
pub mod epoch_log;
pub mod grad_clip;
pub mod loader;
pub mod metric_files;
pub mod multi_device;
pub mod renderer;
pub mod scalars;
pub mod schedule;
pub mod step;
pub mod weight_decay;
pub mod workers;

use diffris_kernels::{SdAutodiffBackend, SdBackend};
use std::sync::Arc;

use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::train::{Interrupter, Learner, SupervisedTraining, TrainingStrategy};
use indicatif::ProgressBar;

use crate::device::backend::{DataParallel, DataParallelBackend};
use crate::util::progress::Heartbeat;

use crate::config::RunDir;
use crate::config::recipe::{SelectBy, TrainSpec};
use crate::device::turnstile::Rounds;
use crate::inputs::split::EncodedSplit;
pub use checkpoint::last_checkpoint;
use checkpoint::{AtomicRecorder, BestAndLast};
use divergence::{Diverged, DivergenceWatch};
use epoch_log::{EpochLog, RisMetric, RisMetricKind, best_epoch};
use loader::EpochLoader;
use metric_files::MetricFiles;
use renderer::BarRenderer;
use scalars::ScalarLog;
use schedule::PolyLr;
pub use step::Trainee;

/// The outcome of training.
pub struct Trained<B: SdBackend> {
    /// The model of the best validation epoch.
    pub model: Trainee<B>,
    pub best_epoch: usize,
    pub log: EpochLog,
}

/// How one training run behaves besides its recipe.
pub struct TrainOptions {
    /// The run's seed (sample order and backend RNG per epoch).
    pub seed: u64,
    /// Continue from the last checkpoint in the run directory.
    pub resume: bool,
    /// Stop after this many epochs (the run stays resumable).
    pub stop_after: Option<usize>,
    pub bar: ProgressBar,
    /// Progress lines for runs nobody watches.
    pub heartbeat: Option<Heartbeat>,
    /// How several devices share each batch.
    pub parallel: DataParallel,
    /// Samples per validation batch (`None`: the training pass size); the runner's
    /// [`crate::plan::Plan`] picks one that fits the device.
    pub eval_batch: Option<usize>,
}

/// Trains `model` for `spec.epochs` epochs (or until `opts.stop_after`), resuming from the last
/// checkpoint in `dir` when `opts.resume`, and returns the best-on-validation model.
///
/// With several `devices` every optimizer batch is shared over them (burn-train's
/// `MultiDevice` loop with its gradients summed in plan order, [`multi_device`], the optimizer
/// on the first device; or, with [`DataParallel::Ddp`], Burn's distributed data parallel,
/// [`ddp`]; the first device validates): each
/// device runs `ceil(batch_size / (devices * micro_batch))` passes per step. The epoch's passes
/// are those of one device (see [`loader::micro_batches`]), their random draws come in the same
/// order ([`turnstile`](crate::device::turnstile)), so two devices with one pass each compute what one device computes
/// with the same two micro-batches.
pub fn train<B: SdAutodiffBackend + DataParallelBackend>(
    model: Trainee<B>,
    train_data: Arc<EncodedSplit>,
    val_data: Arc<EncodedSplit>,
    spec: &TrainSpec,
    dir: &RunDir,
    devices: &[B::Device],
    opts: TrainOptions,
) -> anyhow::Result<Trained<B::InnerBackend>> {
    let device = devices
        .first()
        .ok_or_else(|| anyhow::anyhow!("training needs at least one device"))?;
    let TrainOptions {
        seed,
        resume,
        stop_after,
        bar,
        heartbeat,
        parallel,
        eval_batch,
    } = opts;
    let n_dev = devices.len();
    let plan = loader::micro_batches(train_data.len(), spec.batch_size, spec.pass_size(), n_dev);
    let (passes, samples) = (plan.len(), plan.last().map_or(0, |p| p.0.end));
    anyhow::ensure!(
        passes > 0,
        "{} training samples make no optimizer batch of {} on {n_dev} device(s) (each batch is \
         cut in {} passes)",
        train_data.len(),
        spec.batch_size,
        n_dev * loader::passes_per_device(spec.batch_size, spec.pass_size(), n_dev)
    );
    // burn-train accumulates `per_device` passes of each device before each optimizer step.
    let per_device = loader::passes_per_device(spec.batch_size, spec.pass_size(), n_dev);
    let per_step = n_dev * per_device;
    let start = if resume { last_checkpoint(dir) } else { None };
    let log = EpochLog::persisted(dir.epochs())?;
    log.truncate(start.unwrap_or(0));
    // Under Burn's DDP the stops the metrics raise are requests the workers act on together
    // (`turnstile::Rounds`); otherwise they stop the learner directly.
    let ddp = parallel == DataParallel::Ddp && n_dev > 1;
    let requests = Interrupter::new();
    let rounds = ddp.then(|| Rounds::new(n_dev, requests.clone()));
    let mut train_loader = EpochLoader::<B>::new(
        train_data,
        spec.batch_size,
        spec.pass_size(),
        Some(seed),
        start.unwrap_or(0),
        device.clone(),
    )
    .shared_over(n_dev);
    if let Some(rounds) = &rounds {
        train_loader = train_loader.in_rounds(rounds.clone());
    }
    let train_loader = Arc::new(train_loader);
    let val_samples = val_data.len();
    let eval_batch = eval_batch.unwrap_or(spec.pass_size()).max(1);
    let val_loader = Arc::new(EpochLoader::<B::InnerBackend>::new(
        val_data,
        eval_batch,
        eval_batch,
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
    let scheduler = PolyLr {
        base: spec.lr,
        power: spec.lr_power,
        total: spec.epochs * (passes / per_step),
        passes_per_step: ddp::schedule_calls_per_step(parallel, n_dev, per_device),
        iteration: 0,
    };
    bar.set_length((spec.epochs * samples) as u64);
    let epochs = stop_after.unwrap_or(spec.epochs).min(spec.epochs);
    let training = SupervisedTraining::new(dir.path(), train_loader, val_loader);
    let stop = training.interrupter();
    if let Some(rounds) = &rounds {
        rounds.bind(stop.clone());
    }
    let requested = if ddp { requests } else { stop.clone() };
    // The newest checkpoint (for resume) and the best one by the epoch log (the final model).
    let recorder = AtomicRecorder::default();
    let divergence = DivergenceWatch::new(requested.clone());
    let strategy = BestAndLast::new(dir, log.clone(), spec.select_by, val_samples)
        .unless_stopped(requested.clone());
    let mut training = training
        .metric_train_numeric(
            RisMetric::new(RisMetricKind::Loss, "train", log.clone())
                .stopping_on_divergence(divergence.clone()),
        )
        .metric_train_numeric(RisMetric::new(RisMetricKind::Miou, "train", log.clone()))
        .metric_valid_numeric(RisMetric::new(RisMetricKind::Loss, "valid", log.clone()))
        .metric_valid_numeric(RisMetric::new(RisMetricKind::Oiou, "valid", log.clone()))
        .metric_valid_numeric(select)
        .with_metric_logger(MetricFiles::new(
            dir.path(),
            start.unwrap_or(0),
            requested.clone(),
        ))
        .with_file_checkpointer(recorder.clone())
        .with_checkpointing_strategy(strategy)
        .with_application_logger(None)
        .renderer(
            BarRenderer::new(
                bar.clone(),
                (spec.epochs, samples, passes, per_step),
                heartbeat,
                log.clone(),
                scheduler.clone(),
            )
            .with_scalars(ScalarLog::new(
                dir.path(),
                start.unwrap_or(0),
                (passes, per_step),
                scheduler.clone(),
                log.clone(),
            )),
        )
        .num_epochs(epochs);
    if let Some(epoch) = start {
        training = training.checkpoint(epoch);
    }
    let optim = weight_decay::GroupedAdamW::new(
        &AdamWConfig::new()
            .with_weight_decay(spec.weight_decay as f32)
            .with_epsilon(1e-8),
        spec.weight_decay_scope,
    );
    if per_device > 1 {
        training = training.grads_accumulation(per_device);
    }
    if n_dev > 1 {
        training = training.with_training_strategy(match parallel {
            DataParallel::Ordered => TrainingStrategy::Custom(Arc::new(
                multi_device::OrderedMultiDevice::<B>::new(devices.to_vec()),
            )),
            #[cfg(feature = "ddp")]
            DataParallel::Ddp => ddp::strategy(devices.to_vec()),
            #[cfg(not(feature = "ddp"))]
            DataParallel::Ddp => anyhow::bail!(
                "--data-parallel ddp needs a binary built with `--no-default-features \
                 --features cuda,ddp`"
            ),
        });
    }
    // A panic in a pass on this thread (one device: burn-train runs the step here; a GPU out of
    // memory is a panic in Burn's cubecl backends) becomes an error like any other stop, with
    // the epoch record saved. Passes on other devices' threads are caught by [`workers`].
    let launched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        training.launch(Learner::new(model, optim, scheduler))
    }));
    bar.finish_and_clear();
    let result = match launched {
        Ok(result) => result,
        Err(payload) => {
            let message = workers::panic_message(payload.as_ref());
            let reason = format!(
                "training failed: a pass panicked: {message}{}",
                workers::memory_hint(&message)
            );
            return Err(match log.save() {
                Ok(()) => anyhow::anyhow!(reason),
                Err(e) => {
                    anyhow::anyhow!("{reason} (and the epoch record could not be saved: {e:#})")
                }
            });
        }
    };
    if let Some(d) = divergence.found() {
        log.save()?;
        return Err(Diverged(d).into());
    }
    if stop.should_stop() || requested.should_stop() {
        // A failed checkpoint write is named by the recorder (burn-train's message wraps it).
        let reason = recorder
            .failure()
            .or_else(|| stop.get_message())
            .or_else(|| requested.get_message())
            .unwrap_or_else(|| "no reason given".into());
        // The reason comes first: on a full disk saving the log fails too.
        return Err(match log.save() {
            Ok(()) => anyhow::anyhow!("training stopped: {reason}"),
            Err(e) => anyhow::anyhow!(
                "training stopped: {reason} (and the epoch record could not be saved: {e:#})"
            ),
        });
    }

    let best_epoch = best_epoch(&log.split("valid"), spec.select_by)
        .ok_or_else(|| anyhow::anyhow!("training produced no validation epoch"))?;
    let model = result
        .model
        .load_file(
            dir.checkpoints().join(format!("model-{best_epoch}")),
            &recorder,
            device,
        )
        .map_err(|e| anyhow::anyhow!("loading the best checkpoint (epoch {best_epoch}): {e}"))?;
    log.save()?;
    Ok(Trained {
        model,
        best_epoch,
        log,
    })
}
