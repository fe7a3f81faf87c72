//! The run of a pre-training stage in segments, the same for every stage (the UNet's latent
//! diffusion, the VAE's autoencoding): each segment of `every` optimizer steps is one
//! burn-train epoch, launched on its own and resumed from the previous segment's checkpoint,
//! after which the stage exports its weights (`steps-N/`) and the loss curve grows by the
//! segment's steps and validation losses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::{InferenceStep, Learner, SupervisedTraining, TrainStep, TrainingStrategy};
use diffris_kernels::SdAutodiffBackend;

use super::log::{DenoiseMetric, LossCurve, PretrainLog};
use super::renderer::PretrainRenderer;
use super::step::DenoiseOutput;
use super::{ExportRecord, PretrainOptions, PretrainSpec};
use crate::config::RunDir;
use crate::records::tfevents::{ScalarSink, now};
use crate::training::checkpoint::{AtomicRecorder, last_checkpoint};
use crate::training::ema::Ema;
use crate::training::grad_clip::ClipGlobalNorm;
use crate::training::loader::{EpochLoader, PassSource, passes_per_device};
use crate::training::multi_device::{OrderedMultiDevice, PlannedModel};
use crate::training::workers;

/// The weights of a stage's module outside autodiff.
pub type Weights<B, S> = <<S as Stage<B>>::Model as AutodiffModule<B>>::InnerModule;

/// What a pre-training stage trains and what it does around the segments.
pub trait Stage<B: SdAutodiffBackend> {
    /// The data of its passes (training and validation).
    type Set: PassSource<B> + PassSource<B::InnerBackend>;
    /// The trained module: its train step gives a pass's loss and share of its batch, and so
    /// does its inference step (burn-train's validation).
    type Model: TrainStep<Input = <Self::Set as PassSource<B>>::Batch, Output = DenoiseOutput<B>>
        + PlannedModel<B>
        + Send
        + AutodiffModule<
            B,
            InnerModule: InferenceStep<
                Input = <Self::Set as PassSource<B::InnerBackend>>::Batch,
                Output = DenoiseOutput<B::InnerBackend>,
            >,
        > + core::fmt::Display
        + 'static;

    /// The starting weights as validated and exported at step 0.
    fn start(&self) -> Weights<B, Self>;

    /// The module that trains in the first segment.
    fn first(&self) -> Self::Model;

    /// The module that trains on from `weights` (the previous segment's).
    fn trainable(&self, weights: Weights<B, Self>) -> Self::Model;

    /// A loss measured besides the validation loss (the UNet's with empty captions), or `None`.
    fn side_loss(&self, weights: &Weights<B, Self>) -> Option<f64>;

    /// Writes `weights` as the diffusers folder of `record.steps` below `out`.
    fn export(
        &self,
        weights: Weights<B, Self>,
        out: &Path,
        record: &ExportRecord,
    ) -> anyhow::Result<PathBuf>;
}

/// The mean loss of `model` over `val`'s samples (each pass counted by its share), as
/// burn-train's validation computes it.
pub fn mean_loss<B, M, S>(model: &M, val: &Arc<S>, eval_batch: usize, device: &B::Device) -> f64
where
    B: diffris_kernels::SdBackend,
    S: PassSource<B>,
    M: InferenceStep<Input = S::Batch, Output = DenoiseOutput<B>>,
{
    use burn::data::dataloader::DataLoader;
    let len = val.epoch_len();
    let loader = EpochLoader::<B, S>::new(val.clone(), len, eval_batch, None, 0, device.clone());
    let (mut sum, mut weight) = (0.0, 0.0);
    for batch in loader.iter() {
        let out = model.step(batch);
        let loss: f64 = out
            .loss
            .into_data()
            .iter::<f64>()
            .next()
            .unwrap_or(f64::NAN);
        sum += out.weight * loss;
        weight += out.weight;
    }
    sum / weight
}

/// Trains `stage` on `train` (validating on `val`) in segments, writing a checkpoint and an
/// exported folder after each into `out`; returns the folders exported by this call.
///
/// With several `devices` every optimizer batch is shared over them in passes of the epoch's
/// plan, their gradients summed in plan order on the first device, which steps the optimizer
/// and validates ([`OrderedMultiDevice`], as `train` does): each sample's draws come from its
/// stream position, so the numbers are those of one device running the same passes, up to the
/// order of the summed gradients (the same for two passes per step).
pub fn run_stage<B: SdAutodiffBackend, S: Stage<B>>(
    stage: &S,
    train: Arc<S::Set>,
    val: Arc<S::Set>,
    spec: &PretrainSpec,
    out: &Path,
    devices: &[B::Device],
    opts: PretrainOptions,
) -> anyhow::Result<Vec<PathBuf>>
where
    <S::Model as TrainStep>::Input: Send,
    <S::Model as TrainStep>::Output: Send,
{
    spec.check()?;
    let device = devices
        .first()
        .ok_or_else(|| anyhow::anyhow!("pre-training needs at least one device"))?;
    let n_dev = devices.len();
    let dir = RunDir::at(out);
    let done = if opts.resume {
        last_checkpoint(&dir).unwrap_or(0)
    } else {
        0
    };
    let curve_path = out.join("loss_curve.csv");
    let mut curve = if done > 0 {
        LossCurve::read(&curve_path)?
    } else {
        LossCurve::default()
    };
    curve.truncate(done * spec.every);
    // TensorBoard's scalars: a resumed run's file withdraws what a stopped process logged
    // after the segment it resumes from.
    let first = if done > 0 { done * spec.every + 1 } else { 0 };
    let mut events = ScalarSink::create(out, first as i64);
    let record = |steps: usize, curve: LossCurve| ExportRecord {
        steps,
        samples: steps * spec.batch_size,
        seed: opts.seed,
        spec: spec.clone(),
        source: opts.source.clone(),
        data: opts.data.clone(),
        curve,
    };
    let mut exported = Vec::new();
    if done == 0 {
        // The validation loss of the starting weights, the curve's first point; they are
        // exported too (`steps-0`), the start of a comparison along the run.
        let start = stage.start();
        let loss = mean_loss(&start, &val, opts.eval_batch, device);
        curve.valid.push((0, loss));
        if let Some(side) = stage.side_loss(&start) {
            curve.valid_empty_caption.push((0, side));
        }
        if spec.ema_decay.is_some() {
            // The average of no step is the starting weights.
            curve.valid_ema.push((0, loss));
        }
        curve.write(&curve_path)?;
        events.write(&curve.scalars(0, 0, spec.lr, now()));
        exported.push(stage.export(start, out, &record(0, curve.clone()))?);
    }
    let log = PretrainLog::new(curve);
    let segment_len = spec.every * spec.batch_size;
    // burn-train accumulates each device's passes of a step before the optimizer's step.
    let per_device = passes_per_device(spec.batch_size, spec.pass_size(), n_dev);
    let last = opts
        .stop_after
        .map_or(spec.segments(), |s| (done + s).min(spec.segments()));
    opts.bar.set_length((spec.segments() * segment_len) as u64);
    opts.bar.set_position((done * segment_len) as u64);
    let mut model = stage.first();
    for segment in done..last {
        let train_loader = Arc::new(
            EpochLoader::<B, S::Set>::new(
                train.clone(),
                spec.batch_size,
                spec.pass_size(),
                Some(opts.seed),
                segment,
                device.clone(),
            )
            .shared_over(n_dev),
        );
        let val_len = PassSource::<B::InnerBackend>::epoch_len(val.as_ref());
        let val_loader = Arc::new(EpochLoader::<B::InnerBackend, S::Set>::new(
            val.clone(),
            val_len,
            opts.eval_batch,
            None,
            segment,
            device.clone(),
        ));
        let mut training = SupervisedTraining::new(out, train_loader, val_loader)
            .metric_train_numeric(DenoiseMetric::train(log.clone()))
            .metric_valid_numeric(DenoiseMetric::valid(log.clone()))
            .with_file_checkpointer(AtomicRecorder::default())
            .with_checkpointing_strategy(KeepLastNCheckpoints::new(1))
            .with_application_logger(None)
            .renderer(PretrainRenderer {
                bar: opts.bar.clone(),
                segment_len,
                every: spec.every,
                steps: spec.steps,
                // A fresh copy per segment: its rate counts from the segment's start.
                heartbeat: opts.heartbeat.clone(),
                log: log.clone(),
            })
            .num_epochs(segment + 1);
        if segment > 0 {
            training = training.checkpoint(segment);
        }
        if per_device > 1 {
            training = training.grads_accumulation(per_device);
        }
        if n_dev > 1 {
            training = training.with_training_strategy(TrainingStrategy::Custom(Arc::new(
                OrderedMultiDevice::<B, S::Model>::new(devices.to_vec()),
            )));
        }
        let optim = Ema::new(
            ClipGlobalNorm::new(
                AdamWConfig::new()
                    .with_weight_decay(spec.weight_decay as f32)
                    .with_epsilon(1e-8)
                    .init(),
                spec.max_grad_norm,
            ),
            spec.ema_decay,
            &model,
        );
        // A handle on the average (the launch hands back only the model).
        let average = optim.clone();
        let launched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            training.launch(Learner::new(model.clone(), optim, spec.lr))
        }));
        let result = launched.map_err(|payload| {
            let message = workers::panic_message(payload.as_ref());
            anyhow::anyhow!(
                "pre-training failed in segment {}: a pass panicked: {message}{}",
                segment + 1,
                workers::memory_hint(&message)
            )
        })?;
        let steps = (segment + 1) * spec.every;
        let trained_steps = log.steps();
        anyhow::ensure!(
            trained_steps == steps,
            "pre-training stopped after {trained_steps} of {steps} steps"
        );
        log.finish_validation(steps);
        let trained = result.model;
        if let Some(side) = stage.side_loss(&trained) {
            log.add_empty_caption(steps, side);
        }
        // The exported weights: the average where one is kept (as diffusers saves its pipeline
        // with `--use_ema`), else the trained ones.
        let exported_weights = match average.shadow() {
            Some((averaged, shadow)) => {
                anyhow::ensure!(
                    averaged == steps,
                    "the weights' average holds {averaged} of {steps} steps"
                );
                let shadow = shadow.valid();
                log.add_ema(steps, mean_loss(&shadow, &val, opts.eval_batch, device));
                shadow
            }
            None => trained.clone(),
        };
        let curve = log.curve();
        curve.write(&curve_path)?;
        events.write(&curve.scalars(segment * spec.every + 1, steps, spec.lr, now()));
        exported.push(stage.export(exported_weights, out, &record(steps, curve))?);
        model = stage.trainable(trained);
    }
    opts.bar.finish_and_clear();
    Ok(exported)
}
