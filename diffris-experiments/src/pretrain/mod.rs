//! `diffris pretrain`: latent-diffusion training of the UNet of a Stable Diffusion stack on
//! image-caption pairs, as SD-1.x was trained (SD's noise schedule, epsilon prediction, MSE,
//! caption dropout for classifier-free guidance, AdamW at a constant rate, optionally a moving
//! average of the weights), on burn-train's supervised learner.
//!
//! A run is cut in segments of `every` optimizer steps. Each segment is one burn-train epoch,
//! launched on its own and resumed from the previous segment's checkpoint, after which the UNet
//! is exported with the frozen VAE and text encoder as a diffusers folder (`steps-N/`) that every
//! command loads as SD weights. The samples run through the data in epochs, each a permutation
//! drawn from the seed; each sample's noise, timestep and caption dropout are drawn from its
//! position in that stream ([`draws`]), so a run computes the same numbers whether it runs
//! through, is resumed at any segment, or cuts its batches into micro-batches of any size
//! (up to the floating-point order of the summed gradients).

pub mod data;
pub mod draws;
pub mod job;
pub mod log;
pub mod renderer;
pub mod step;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::{Learner, SupervisedTraining};
use diffris_kernels::SdAutodiffBackend;
use diffris_model::sd::StableDiffusion;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::config::RunDir;
use crate::records::tfevents::{ScalarSink, now};
use crate::training::checkpoint::{AtomicRecorder, last_checkpoint};
use crate::training::ema::Ema;
use crate::training::grad_clip::ClipGlobalNorm;
use crate::training::loader::{EpochLoader, passes_per_device};
use crate::training::workers;
use crate::util::atomic_file::write_atomic;
use crate::util::progress::Heartbeat;
use data::DenoiseSet;
use log::{DenoiseMetric, LossCurve, PretrainLog};
use renderer::PretrainRenderer;
use step::Denoiser;

/// The training recipe of a pre-training run (diffusers' `train_text_to_image.py` defaults
/// where SD's recipe is not known: AdamW with betas 0.9/0.999, weight decay 1e-2, eps 1e-8; a
/// constant rate; caption dropout 10%, as SD-1.5's release notes give for classifier-free
/// guidance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSpec {
    /// Optimizer steps of the whole run (a multiple of `every`).
    pub steps: usize,
    /// Steps per segment: a checkpoint and an exported folder after each.
    pub every: usize,
    pub batch_size: usize,
    /// Samples per pass (`None`: the whole batch); gradients of the passes of a batch are
    /// summed before the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch: Option<usize>,
    pub lr: f64,
    pub weight_decay: f64,
    /// The gradients' global norm is clipped to this before every step (`None`: not clipped;
    /// diffusers' scripts clip at 1.0 by default). See [`ClipGlobalNorm`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    /// The maximum decay of an exponential moving average of the trained weights, which the
    /// exports then hold (`None`: no average; diffusers' `--use_ema` uses 0.9999). See [`Ema`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Share of captions replaced by the empty one.
    pub caption_dropout: f64,
    /// The text encoder trains with the UNet (as diffusers' DreamBooth and LoRA scripts'
    /// `--train_text_encoder`), reading every pass's token ids; the export carries it.
    /// Default: frozen, the captions' states encoded once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub train_text_encoder: bool,
    /// Side of the square training images.
    pub image_size: usize,
    /// The latents' factor (the SD's `scaling_factor`).
    pub latent_scale: f64,
    /// Train on draws from the VAE's posterior (diffusers' scripts) or on its mean (for a VAE
    /// that is not a trained KL autoencoder, such as the tiny profile's random one, whose
    /// variance says nothing about the image).
    pub sample_posterior: bool,
    /// Images held out of training for the validation loss.
    pub val_images: usize,
}

impl PretrainSpec {
    /// Samples per pass.
    pub fn pass_size(&self) -> usize {
        self.micro_batch
            .unwrap_or(self.batch_size)
            .clamp(1, self.batch_size)
    }

    /// Refuses values no run can train with.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.every > 0 && self.steps > 0,
            "steps and every must be positive"
        );
        anyhow::ensure!(
            self.steps.is_multiple_of(self.every),
            "steps ({}) must be a multiple of every ({})",
            self.steps,
            self.every
        );
        anyhow::ensure!(self.batch_size > 0, "batch_size must be positive");
        anyhow::ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "lr must be positive, not {}",
            self.lr
        );
        anyhow::ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "weight_decay must be >= 0, not {}",
            self.weight_decay
        );
        if let Some(max) = self.max_grad_norm {
            anyhow::ensure!(
                max.is_finite() && max > 0.0,
                "max_grad_norm must be positive, not {max}"
            );
        }
        if let Some(d) = self.ema_decay {
            anyhow::ensure!(
                d > 0.0 && d < 1.0,
                "ema_decay must lie strictly between 0 and 1, not {d}"
            );
        }
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.caption_dropout),
            "caption_dropout must lie in [0, 1], not {}",
            self.caption_dropout
        );
        anyhow::ensure!(
            self.latent_scale.is_finite() && self.latent_scale > 0.0,
            "latent_scale must be positive"
        );
        anyhow::ensure!(self.val_images > 0, "val_images must be positive");
        Ok(())
    }

    /// Segments of the run.
    pub fn segments(&self) -> usize {
        self.steps / self.every
    }
}

/// The record written beside each exported folder (`steps-N/pretrain.json`). The folder holds
/// the weights' moving average where `spec.ema_decay` is set, else the trained weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub steps: usize,
    pub samples: usize,
    pub seed: u64,
    pub spec: PretrainSpec,
    /// The SD stack the run started from and the captions it trained on.
    pub source: String,
    pub data: String,
    pub curve: LossCurve,
}

/// The name of an exported folder.
pub fn export_dir(out: &Path, steps: usize) -> PathBuf {
    out.join(format!("steps-{steps}"))
}

/// How a run behaves besides its recipe.
pub struct PretrainOptions {
    pub seed: u64,
    pub resume: bool,
    /// Stop after this many segments (the run stays resumable).
    pub stop_after: Option<usize>,
    pub bar: ProgressBar,
    pub heartbeat: Option<Heartbeat>,
    /// Samples per validation pass.
    pub eval_batch: usize,
    /// What the record names as the source stack and the data.
    pub source: String,
    pub data: String,
    /// The source stack's own `tokenizer/` folder, copied into every export.
    pub tokenizer: Option<PathBuf>,
}

/// Trains the UNet of `sd` on `train` (validating on `val`) in segments, writing a checkpoint and
/// an exported folder after each into `out`; returns the folders exported by this call.
pub fn pretrain<B: SdAutodiffBackend>(
    sd: &StableDiffusion<B::InnerBackend>,
    train: Arc<DenoiseSet>,
    val: Arc<DenoiseSet>,
    spec: &PretrainSpec,
    out: &Path,
    device: &B::Device,
    opts: PretrainOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    spec.check()?;
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
    let val_empty = Arc::new(DenoiseSet {
        data: val.data.without_captions(),
        draws: val.draws.clone(),
    });
    let mut exported = Vec::new();
    if done == 0 {
        // The validation loss of the starting weights, the curve's first point; they are
        // exported too (`steps-0`), the start of a comparison along the run.
        let loss =
            validation_loss::<B::InnerBackend>(&sd.unet, None, &val, opts.eval_batch, device);
        curve.valid.push((0, loss));
        let empty =
            validation_loss::<B::InnerBackend>(&sd.unet, None, &val_empty, opts.eval_batch, device);
        curve.valid_empty_caption.push((0, empty));
        if spec.ema_decay.is_some() {
            // The average of no step is the starting weights.
            curve.valid_ema.push((0, loss));
        }
        curve.write(&curve_path)?;
        events.write(&curve.scalars(0, 0, spec.lr, now()));
        exported.push(export(
            sd,
            sd.unet.clone(),
            None,
            out,
            opts.tokenizer.as_deref(),
            &ExportRecord {
                steps: 0,
                samples: 0,
                seed: opts.seed,
                spec: spec.clone(),
                source: opts.source.clone(),
                data: opts.data.clone(),
                curve: curve.clone(),
            },
        )?);
    }
    let log = PretrainLog::new(curve);
    let segment_len = spec.every * spec.batch_size;
    let per_step = passes_per_device(spec.batch_size, spec.pass_size(), 1);
    let last = opts
        .stop_after
        .map_or(spec.segments(), |s| (done + s).min(spec.segments()));
    opts.bar.set_length((spec.segments() * segment_len) as u64);
    opts.bar.set_position((done * segment_len) as u64);
    let mut model = Denoiser::<B>::trainable(
        sd.unet.clone(),
        spec.train_text_encoder.then(|| sd.text_encoder.clone()),
    );
    for segment in done..last {
        let train_loader = Arc::new(EpochLoader::<B, DenoiseSet>::new(
            train.clone(),
            spec.batch_size,
            spec.pass_size(),
            Some(opts.seed),
            segment,
            device.clone(),
        ));
        let val_loader = Arc::new(EpochLoader::<B::InnerBackend, DenoiseSet>::new(
            val.clone(),
            val.data.len(),
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
        if per_step > 1 {
            training = training.grads_accumulation(per_step);
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
        let Denoiser { unet, text_encoder } = result.model;
        log.add_empty_caption(
            steps,
            validation_loss::<B::InnerBackend>(
                &unet,
                text_encoder.as_ref(),
                &val_empty,
                opts.eval_batch,
                device,
            ),
        );
        // The exported weights: the average where one is kept (as diffusers saves its pipeline
        // with `--use_ema`), else the trained ones.
        let exported_weights = match average.shadow() {
            Some((averaged, shadow)) => {
                anyhow::ensure!(
                    averaged == steps,
                    "the weights' average holds {averaged} of {steps} steps"
                );
                let shadow = shadow.valid();
                log.add_ema(
                    steps,
                    validation_loss::<B::InnerBackend>(
                        &shadow.unet,
                        shadow.text_encoder.as_ref(),
                        &val,
                        opts.eval_batch,
                        device,
                    ),
                );
                shadow
            }
            None => Denoiser {
                unet: unet.clone(),
                text_encoder: text_encoder.clone(),
            },
        };
        let curve = log.curve();
        curve.write(&curve_path)?;
        events.write(&curve.scalars(segment * spec.every + 1, steps, spec.lr, now()));
        let folder = export(
            sd,
            exported_weights.unet,
            exported_weights.text_encoder,
            out,
            opts.tokenizer.as_deref(),
            &ExportRecord {
                steps,
                samples: steps * spec.batch_size,
                seed: opts.seed,
                spec: spec.clone(),
                source: opts.source.clone(),
                data: opts.data.clone(),
                curve,
            },
        )?;
        exported.push(folder);
        model = Denoiser::<B>::trainable(unet, text_encoder);
    }
    opts.bar.finish_and_clear();
    Ok(exported)
}

/// The validation loss of `unet` on `val` (its captions read by `text_encoder` where given,
/// else their states encoded once): the mean over its samples, as burn-train's validation
/// computes it.
pub fn validation_loss<B: diffris_kernels::SdBackend>(
    unet: &diffris_model::sd::UNet2DConditionModel<B>,
    text_encoder: Option<&diffris_model::sd::ClipTextModel<B>>,
    val: &Arc<DenoiseSet>,
    eval_batch: usize,
    device: &B::Device,
) -> f64 {
    use burn::data::dataloader::DataLoader;
    let model = Denoiser {
        unet: unet.clone(),
        text_encoder: text_encoder.cloned(),
    };
    let loader = EpochLoader::<B, DenoiseSet>::new(
        val.clone(),
        val.data.len(),
        eval_batch,
        None,
        0,
        device.clone(),
    );
    let (mut sum, mut weight) = (0.0, 0.0);
    for batch in loader.iter() {
        let loss: f64 = model
            .loss(&batch)
            .into_data()
            .iter::<f64>()
            .next()
            .unwrap_or(f64::NAN);
        sum += batch.loss_weight * loss;
        weight += batch.loss_weight;
    }
    sum / weight
}

/// Writes `unet` with the VAE of `sd` and `text_encoder` (where it trained; else `sd`'s) as a
/// diffusers folder `steps-N/` with its record, through a temporary folder renamed into place.
fn export<B: diffris_kernels::SdBackend>(
    sd: &StableDiffusion<B>,
    unet: diffris_model::sd::UNet2DConditionModel<B>,
    text_encoder: Option<diffris_model::sd::ClipTextModel<B>>,
    out: &Path,
    tokenizer: Option<&Path>,
    record: &ExportRecord,
) -> anyhow::Result<PathBuf> {
    let dir = export_dir(out, record.steps);
    let tmp = out.join(format!(".steps-{}.partial", record.steps));
    let _ = std::fs::remove_dir_all(&tmp);
    let stack = StableDiffusion {
        text_encoder: text_encoder.unwrap_or_else(|| sd.text_encoder.clone()),
        vae: sd.vae.clone(),
        unet,
    };
    stack
        .save_diffusers(&tmp)
        .with_context(|| format!("exporting to {}", tmp.display()))?;
    if let Some(from) = tokenizer {
        let to = tmp.join("tokenizer");
        std::fs::create_dir_all(&to)?;
        for entry in std::fs::read_dir(from)? {
            let path = entry?.path();
            if path.is_file() {
                let name = path.file_name().expect("a file has a name");
                std::fs::copy(&path, to.join(name))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
    }
    write_atomic(
        &tmp.join("pretrain.json"),
        serde_json::to_string_pretty(record)?.as_bytes(),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving into {}", dir.display()))?;
    Ok(dir)
}
