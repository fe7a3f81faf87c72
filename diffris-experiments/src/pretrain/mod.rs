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

pub mod autoencoder;
pub mod data;
pub mod draws;
pub mod images;
pub mod job;
pub mod log;
pub mod renderer;
pub mod sample;
pub mod segments;
pub mod step;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use diffris_kernels::SdAutodiffBackend;
use diffris_model::sd::{StableDiffusion, VaeDecoder};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::util::atomic_file::write_atomic;
use crate::util::progress::Heartbeat;
use data::DenoiseSet;
use log::LossCurve;
use segments::{Stage, mean_loss, run_stage};
use step::Denoiser;

/// The training recipe of a pre-training run (diffusers' `train_text_to_image.py` defaults
/// where SD's recipe is not known: AdamW with betas 0.9/0.999, weight decay 1e-2, eps 1e-8; a
/// constant rate; caption dropout 10%, as SD-1.5's release notes give for classifier-free
/// guidance).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainSpec {
    /// What trains: the UNet (default) or, in the stage before it, the VAE.
    #[serde(default, skip_serializing_if = "PretrainStage::is_unet")]
    pub stage: PretrainStage,
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
    /// diffusers' scripts clip at 1.0 by default). See [`ClipGlobalNorm`](crate::training::grad_clip::ClipGlobalNorm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    /// The maximum decay of an exponential moving average of the trained weights, which the
    /// exports then hold (`None`: no average; diffusers' `--use_ema` uses 0.9999). See [`Ema`](crate::training::ema::Ema).
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

/// What a pre-training run trains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum PretrainStage {
    /// The UNet by latent diffusion on image-caption pairs (SD's own training).
    #[default]
    Unet,
    /// The VAE as a KL autoencoder on the images alone (latent diffusion's first stage): the
    /// L1 reconstruction of a posterior draw plus `kl_weight` times the posterior's KL
    /// divergence from the standard normal, both summed per image ([`autoencoder`]).
    Vae { kl_weight: f64 },
}

impl PretrainStage {
    pub fn is_unet(&self) -> bool {
        *self == Self::Unet
    }
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
        if let PretrainStage::Vae { kl_weight } = self.stage {
            anyhow::ensure!(
                kl_weight.is_finite() && kl_weight >= 0.0,
                "kl_weight must be >= 0, not {kl_weight}"
            );
            anyhow::ensure!(
                !self.train_text_encoder,
                "the VAE's stage trains no text encoder"
            );
        }
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
/// an exported folder after each into `out` (with `sd`'s VAE `decoder` where it has one);
/// returns the folders exported by this call.
#[allow(clippy::too_many_arguments)]
pub fn pretrain<B: SdAutodiffBackend>(
    sd: &StableDiffusion<B::InnerBackend>,
    decoder: Option<VaeDecoder<B::InnerBackend>>,
    train: Arc<DenoiseSet>,
    val: Arc<DenoiseSet>,
    spec: &PretrainSpec,
    out: &Path,
    devices: &[B::Device],
    opts: PretrainOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    let device = devices
        .first()
        .ok_or_else(|| anyhow::anyhow!("pre-training needs at least one device"))?;
    let stage = UnetStage {
        sd,
        train_text_encoder: spec.train_text_encoder,
        val_empty: Arc::new(DenoiseSet {
            data: val.data.without_captions(),
            draws: val.draws.clone(),
        }),
        eval_batch: opts.eval_batch,
        tokenizer: opts.tokenizer.clone(),
        decoder,
        device: device.clone(),
    };
    run_stage::<B, _>(&stage, train, val, spec, out, devices, opts)
}

/// Latent-diffusion training of a stack's UNet (and text encoder, where it trains).
struct UnetStage<'a, B: SdAutodiffBackend> {
    sd: &'a StableDiffusion<B::InnerBackend>,
    train_text_encoder: bool,
    /// The validation set with every caption emptied.
    val_empty: Arc<DenoiseSet>,
    eval_batch: usize,
    tokenizer: Option<PathBuf>,
    /// The source's VAE decoder, carried into the exports.
    decoder: Option<VaeDecoder<B::InnerBackend>>,
    device: B::Device,
}

impl<B: SdAutodiffBackend> Stage<B> for UnetStage<'_, B> {
    type Set = DenoiseSet;
    type Model = Denoiser<B>;

    fn start(&self) -> Denoiser<B::InnerBackend> {
        // The captions' states were encoded by the starting text encoder.
        Denoiser {
            unet: self.sd.unet.clone(),
            text_encoder: None,
        }
    }

    fn first(&self) -> Denoiser<B> {
        Denoiser::trainable(
            self.sd.unet.clone(),
            self.train_text_encoder
                .then(|| self.sd.text_encoder.clone()),
        )
    }

    fn trainable(&self, weights: Denoiser<B::InnerBackend>) -> Denoiser<B> {
        Denoiser::trainable(weights.unet, weights.text_encoder)
    }

    fn side_loss(&self, weights: &Denoiser<B::InnerBackend>) -> Option<f64> {
        Some(mean_loss(
            weights,
            &self.val_empty,
            self.eval_batch,
            &self.device,
        ))
    }

    fn export(
        &self,
        weights: Denoiser<B::InnerBackend>,
        out: &Path,
        record: &ExportRecord,
    ) -> anyhow::Result<PathBuf> {
        let stack = StableDiffusion {
            text_encoder: weights
                .text_encoder
                .unwrap_or_else(|| self.sd.text_encoder.clone()),
            vae: self.sd.vae.clone(),
            unet: weights.unet,
        };
        export_stack(
            &stack,
            self.decoder.as_ref(),
            out,
            self.tokenizer.as_deref(),
            record,
        )
    }
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
    let model = Denoiser {
        unet: unet.clone(),
        text_encoder: text_encoder.cloned(),
    };
    mean_loss(&model, val, eval_batch, device)
}

/// Writes `stack` (with the VAE's `decoder` where there is one) as a diffusers folder `steps-N/`
/// with its record and `tokenizer`, through a temporary folder renamed into place.
pub(crate) fn export_stack<B: diffris_kernels::SdBackend>(
    stack: &StableDiffusion<B>,
    decoder: Option<&VaeDecoder<B>>,
    out: &Path,
    tokenizer: Option<&Path>,
    record: &ExportRecord,
) -> anyhow::Result<PathBuf> {
    let dir = export_dir(out, record.steps);
    let tmp = out.join(format!(".steps-{}.partial", record.steps));
    let _ = std::fs::remove_dir_all(&tmp);
    match decoder {
        Some(d) => stack.save_diffusers_with_decoder(d, &tmp),
        None => stack.save_diffusers(&tmp),
    }
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
