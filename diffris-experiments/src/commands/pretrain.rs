//! `diffris pretrain`: latent-diffusion training of an SD stack's UNet on image-caption pairs,
//! or of its VAE as a KL autoencoder (see [`crate::pretrain`]).

use std::path::PathBuf;

use crate::device::backend::DeviceList;
use crate::pretrain::job::Request;

/// Arguments of `diffris pretrain`.
#[derive(Debug, Clone, clap::Args)]
pub struct PretrainArgs {
    /// The run folder: its checkpoint, loss curve, records and one exported diffusers folder
    /// per segment (`steps-N/`, loadable by every command as SD weights).
    #[arg(long)]
    pub out: PathBuf,
    /// What trains: `unet` (latent diffusion on the captioned images) or `vae` (the stage
    /// before it: the VAE as a KL autoencoder on the images alone; the exports carry its
    /// decoder and its measured latent factor, and serve as --sd of a `unet` run).
    #[arg(long, default_value = "unet", value_parser = ["unet", "vae"])]
    pub stage: String,
    /// The weight of the KL term of the `vae` stage (latent diffusion's KL-regularised
    /// autoencoders: 1e-6).
    #[arg(long, default_value_t = 1e-6, value_parser = super::bounds::within(0.0, 1e6))]
    pub kl_weight: f64,
    /// The stack to start from: a diffusers folder, or a single file with --arch. Default: the
    /// tiny profile's random weights (seed 0), drawn into the cache.
    #[arg(long)]
    pub sd: Option<PathBuf>,
    /// Architecture of a single-file --sd: sd15 or tiny.
    #[arg(long)]
    pub arch: Option<String>,
    /// Image-caption folder (diffusers' `metadata.jsonl` layout). Default: SynthRS scenes with
    /// captions written from them, generated into the cache (--synth-images of them).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Images of the generated SynthRS caption set.
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(2..=10_000_000))]
    pub synth_images: u64,
    /// Optimizer steps of the run (a multiple of --every).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub steps: u64,
    /// Steps per segment: a checkpoint and an exported folder after each.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub every: u64,
    /// Samples per optimizer step.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub batch: u64,
    /// Samples per pass (gradients of a batch's passes are summed).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub micro_batch: Option<u64>,
    /// AdamW's learning rate (constant). Default: 1e-3 for a stack of the tiny profile's
    /// architecture (its UNet trains from random weights; docs/DESIGN.md, section 12, compares
    /// the two rates), else 1e-4 (diffusers' fine-tuning default).
    #[arg(long, value_parser = super::bounds::within(1e-12, 10.0))]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 1e-2, value_parser = super::bounds::within(0.0, 10.0))]
    pub weight_decay: f64,
    /// Clip the gradients' global norm to this before every step (as diffusers' scripts do with
    /// `--max_grad_norm`, 1.0 there by default). Default: no clipping.
    #[arg(long, value_parser = super::bounds::within(1e-12, 1e12))]
    pub max_grad_norm: Option<f64>,
    /// Keep an exponential moving average of the trained weights with at most this decay (as
    /// diffusers' `--use_ema`, whose decay is 0.9999): each export holds the average, and the
    /// loss curve gains its validation loss. Default: no average.
    #[arg(long, value_parser = super::bounds::within(1e-6, 0.999_999_999))]
    pub ema_decay: Option<f64>,
    /// Share of captions replaced by the empty caption (classifier-free guidance).
    #[arg(long, default_value_t = 0.1, value_parser = super::bounds::within(0.0, 1.0))]
    pub caption_dropout: f64,
    /// Train the text encoder with the UNet (as diffusers' DreamBooth and LoRA scripts'
    /// `--train_text_encoder`); the exports carry it. Default: frozen.
    #[arg(long)]
    pub train_text_encoder: bool,
    /// Side of the square training images. Default: 64 for a stack of the tiny profile's
    /// architecture (the default stack, its exports), else 512.
    #[arg(long, value_parser = clap::value_parser!(u64).range(8..=8192))]
    pub image_size: Option<u64>,
    /// The latents' factor. Default: the tiny profile's for the default stack, else the VAE's
    /// `scaling_factor`.
    #[arg(long, value_parser = super::bounds::within(1e-6, 1e6))]
    pub latent_scale: Option<f64>,
    /// What the UNet learns to denoise: `sample` (draws from the VAE's posterior, as diffusers'
    /// training scripts) or `mean` (its mean). Default: mean for the default stack (its random
    /// VAE is no trained KL autoencoder: its variance means nothing), else sample.
    #[arg(long, value_parser = ["sample", "mean"])]
    pub latents: Option<String>,
    /// Images held out for the validation loss (whole images, by a hash of their file name).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub val_images: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many segments (the run stays resumable).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub stop_after: Option<u64>,
    /// Where generated data and random weights are cached.
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Runs the command.
pub fn run(devices: DeviceList, a: PretrainArgs) -> anyhow::Result<()> {
    crate::pretrain::job::run(
        &devices,
        Request {
            out: a.out,
            stage: if a.stage == "vae" {
                crate::pretrain::PretrainStage::Vae {
                    kl_weight: a.kl_weight,
                }
            } else {
                crate::pretrain::PretrainStage::Unet
            },
            sd: a.sd,
            arch: a.arch,
            data: a.data,
            synth_images: a.synth_images as usize,
            steps: a.steps as usize,
            every: a.every as usize,
            batch: a.batch as usize,
            micro_batch: a.micro_batch.map(|m| m as usize),
            lr: a.lr,
            weight_decay: a.weight_decay,
            max_grad_norm: a.max_grad_norm,
            ema_decay: a.ema_decay,
            caption_dropout: a.caption_dropout,
            train_text_encoder: a.train_text_encoder,
            image_size: a.image_size.map(|s| s as usize),
            latent_scale: a.latent_scale,
            sample_posterior: a.latents.map(|l| l == "sample"),
            val_images: a.val_images as usize,
            seed: a.seed,
            resume: a.resume,
            stop_after: a.stop_after.map(|s| s as usize),
            cache: a.cache.unwrap_or_else(crate::util::cache::default_cache),
        },
    )
}
