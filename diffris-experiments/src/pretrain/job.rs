//! `diffris pretrain` from its request to its run folder: the source stack and the captions
//! (defaults: the tiny profile's random weights and a generated SynthRS caption set), the held-out
//! images, the records written before training, the encoding, the run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use burn::backend::Autodiff;
use diffris_data::formats::captions::{CaptionedImage, read_captions};
use diffris_data::synth::caption_set::{CaptionSetConfig, cached_caption_dir, write_caption_set};
use diffris_model::sd::NoiseSchedule;
use indicatif::MultiProgress;
use serde::{Deserialize, Serialize};

use super::autoencoder::{fresh_decoder, pretrain_vae};
use super::data::{DenoiseSet, DrawSpec, Encoded};
use super::images::{ImageSet, read_images};
use super::{PretrainOptions, PretrainSpec, PretrainStage, pretrain};
use crate::config::RunDir;
use crate::config::profile::{TINY_LATENT_SCALE, tiny_arch, tiny_synth, tiny_weight_seed};
use crate::device::backend::{
    BackendJob, DataParallel, DeviceBackend, DeviceList, RunTarget, dispatch_on,
};
use crate::inputs::frozen::{load_frozen, load_frozen_preset, provision_random};
use crate::records::env::EnvRecord;
use crate::util::atomic_file::write_atomic;
use crate::util::cache::fnv1a;
use crate::util::lock::{lock_path, lock_waiting};
use crate::util::progress::{Heartbeat, bar};

/// What `diffris pretrain` was asked (its arguments).
pub struct Request {
    pub out: PathBuf,
    pub stage: PretrainStage,
    pub sd: Option<PathBuf>,
    pub arch: Option<String>,
    pub data: Option<PathBuf>,
    pub synth_images: usize,
    pub steps: usize,
    pub every: usize,
    pub batch: usize,
    pub micro_batch: Option<usize>,
    pub lr: Option<f64>,
    pub weight_decay: f64,
    pub max_grad_norm: Option<f64>,
    pub ema_decay: Option<f64>,
    pub caption_dropout: f64,
    pub train_text_encoder: bool,
    pub image_size: Option<usize>,
    pub latent_scale: Option<f64>,
    pub sample_posterior: Option<bool>,
    pub val_images: usize,
    pub seed: u64,
    pub resume: bool,
    pub stop_after: Option<usize>,
    pub cache: PathBuf,
}

/// The SD version whose random weights the tiny profile reads by default (the recipes'
/// `sd_weights`), and `pretrain` starts from by default.
pub const TINY_DEFAULT_WEIGHTS: &str = "sd15";

/// A pre-training run's resolved configuration (`config.ron`): a resumed run must match it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub spec: PretrainSpec,
    pub seed: u64,
    /// The source stack: a path, or the tiny profile's random weights.
    pub source: String,
    /// The caption folder, or the generated SynthRS caption set's config.
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synth: Option<CaptionSetConfig>,
    /// Devices sharing each batch (how the gradients of three or more passes are summed
    /// depends on it, so a run resumes on as many).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub devices: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// The SynthRS caption set of the tiny profile's scenes (its image size, objects and scale).
pub fn tiny_caption_set(images: usize) -> CaptionSetConfig {
    let s = tiny_synth();
    CaptionSetConfig {
        image_size: s.image_size,
        images,
        seed: 0,
        min_objects: s.min_objects,
        max_objects: s.max_objects,
        object_scale: s.object_scale,
    }
}

/// The indices of the `n` pairs held out for validation: whole images, the first by the hash of
/// their path below `root` (every pair of a held-out image is held out).
pub fn held_out(pairs: &[CaptionedImage], n: usize, root: &Path) -> Vec<bool> {
    let key = |p: &Path| {
        let rel = p.strip_prefix(root).unwrap_or(p);
        (fnv1a(rel.to_string_lossy().bytes()), rel.to_path_buf())
    };
    let mut images: Vec<(u64, PathBuf)> = pairs.iter().map(|p| key(&p.image)).collect();
    images.sort();
    images.dedup();
    let chosen: std::collections::BTreeSet<&(u64, PathBuf)> = images.iter().take(n).collect();
    pairs
        .iter()
        .map(|p| chosen.contains(&key(&p.image)))
        .collect()
}

impl Request {
    /// The recipe this request asks for, with the latents' factor `latent_scale` (the VAE's own
    /// is known once the stack is read); `tiny`: the stack is of the tiny profile's
    /// architecture (its defaults: 64 px images, and lr 1e-3 as its UNet trains from random
    /// weights).
    fn spec(&self, latent_scale: f64, tiny: bool) -> PretrainSpec {
        let default_stack = self.sd.is_none();
        PretrainSpec {
            stage: self.stage,
            steps: self.steps,
            every: self.every,
            batch_size: self.batch,
            micro_batch: self.micro_batch,
            lr: self.lr.unwrap_or(if tiny { 1e-3 } else { 1e-4 }),
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            ema_decay: self.ema_decay,
            caption_dropout: self.caption_dropout,
            train_text_encoder: self.train_text_encoder,
            image_size: self.image_size.unwrap_or(if tiny { 64 } else { 512 }),
            latent_scale,
            sample_posterior: self.sample_posterior.unwrap_or(!default_stack),
            val_images: self.val_images,
        }
    }
}

struct Pretrain(Request);

impl BackendJob for Pretrain {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> anyhow::Result<()> {
        let r = self.0;
        let dir = RunDir::at(&r.out);
        let config_path = r.out.join("config.ron");
        if !r.resume && r.out.exists() && std::fs::read_dir(&r.out)?.next().is_some() {
            anyhow::bail!(
                "{} exists and is not empty: --resume continues its run, or choose another --out",
                r.out.display()
            );
        }

        // Every flag is checked before anything is generated, read or written.
        r.spec(r.latent_scale.unwrap_or(1.0), true).check()?;
        let devices = target.burn_devices(&device);
        anyhow::ensure!(
            devices.len() == 1 || target.parallel == DataParallel::Ordered,
            "pretrain shares its batches over several devices in plan order only: leave \
             --data-parallel at `ordered`"
        );

        // The captions (read first: a bad folder is named before any weights are read).
        let (root, data, synth) = match &r.data {
            Some(p) => (p.clone(), p.display().to_string(), None),
            None => {
                let cfg = tiny_caption_set(r.synth_images);
                let root = cached_caption_dir(&r.cache, &cfg);
                let _lock = lock_waiting(&lock_path(&root), |owner| {
                    eprintln!("waiting for {owner}, which is writing {}", root.display())
                })?;
                if !root
                    .join(diffris_data::formats::captions::METADATA)
                    .is_file()
                {
                    eprintln!(
                        "writing {} SynthRS captioned scenes to {}",
                        cfg.images,
                        root.display()
                    );
                    write_caption_set(&root, &cfg)?;
                }
                let data = format!("SynthRS captions ({} images)", cfg.images);
                (root, data, Some(cfg))
            }
        };
        let pairs = read_captions(&root)?;
        let held = held_out(&pairs, r.val_images, &root);
        let n_val = held.iter().filter(|h| **h).count();
        anyhow::ensure!(
            n_val < pairs.len(),
            "{}: {} pairs leave nothing to train on after holding out {} images",
            root.display(),
            pairs.len(),
            r.val_images
        );

        // The source stack.
        let default_stack = r.sd.is_none();
        let generator = crate::device::backend::weights_generator::<B>(&device);
        let (sd_path, source) = match &r.sd {
            Some(p) => (p.clone(), p.display().to_string()),
            None => (
                provision_random::<B>(
                    &tiny_arch(),
                    tiny_weight_seed(TINY_DEFAULT_WEIGHTS),
                    &r.cache,
                    &device,
                    Some(&generator),
                )?,
                format!("the tiny profile's random `{TINY_DEFAULT_WEIGHTS}` weights"),
            ),
        };
        let (sd, tokenizer) = match (&r.sd, &r.arch) {
            (Some(_), arch) => load_frozen_preset::<B>(&sd_path, arch.as_deref(), &device)?,
            (None, _) => load_frozen::<B>(&sd_path, None, &device)?,
        };
        let tokenizer_dir =
            Some(sd_path.join("tokenizer")).filter(|t| t.join("vocab.json").is_file());

        let tiny = default_stack || crate::config::profile::is_tiny_arch(&sd.config());
        let spec = r.spec(
            r.latent_scale.unwrap_or(if default_stack {
                TINY_LATENT_SCALE
            } else {
                sd.vae.config().scaling_factor
            }),
            tiny,
        );
        spec.check()?;
        let config = PretrainConfig {
            spec: spec.clone(),
            seed: r.seed,
            source: source.clone(),
            data: data.clone(),
            synth,
            devices: devices.len(),
        };
        let text = ron::ser::to_string_pretty(&config, ron::ser::PrettyConfig::default())?;
        if r.resume && config_path.is_file() {
            let saved = std::fs::read_to_string(&config_path)?;
            anyhow::ensure!(
                saved == text,
                "{} was started with another configuration; resume it with the same flags \
                 (saved:\n{saved}\nnow:\n{text})",
                r.out.display()
            );
        } else {
            std::fs::create_dir_all(&r.out)
                .with_context(|| format!("creating {}", r.out.display()))?;
            write_atomic(&config_path, text.as_bytes())?;
        }
        dir.write_env(&EnvRecord::now(&target, r.seed))?;

        // The source's VAE decoder, where its folder holds one (a `vae` stage's export does).
        let decoder = if has_decoder(&sd_path) {
            Some(
                diffris_model::sd::VaeDecoder::<B>::load(&sd_path, None, &device)
                    .with_context(|| format!("reading the VAE decoder of {}", sd_path.display()))?,
            )
        } else {
            None
        };
        let progress = MultiProgress::new();
        let options = |progress: &MultiProgress, name: &str| PretrainOptions {
            seed: r.seed,
            resume: r.resume,
            stop_after: r.stop_after,
            bar: bar(progress, name.into()),
            heartbeat: Some(
                Heartbeat::new(
                    name.into(),
                    std::time::Duration::from_secs(30),
                    progress.is_hidden(),
                    Some(dir.progress_log()),
                )
                .with_device_memory(crate::device::usage::progress_reader(target.spec)),
            ),
            eval_batch: spec.pass_size(),
            source: source.clone(),
            data: data.clone(),
            tokenizer: tokenizer_dir.clone(),
        };
        let rows =
            |val: bool| -> Vec<usize> { (0..pairs.len()).filter(|&i| held[i] == val).collect() };

        if let PretrainStage::Vae { kl_weight } = spec.stage {
            // The images alone, each once (a caption folder may caption an image several
            // times), read at the training size.
            let images = |val: bool| -> Vec<PathBuf> {
                let mut seen = std::collections::BTreeSet::new();
                rows(val)
                    .into_iter()
                    .map(|i| pairs[i].image.clone())
                    .filter(|p| seen.insert(p.clone()))
                    .collect()
            };
            let (train_paths, val_paths) = (images(false), images(true));
            let read_bar = bar(&progress, "reading images".into());
            let (train_pixels, val_pixels) = (
                read_images(&train_paths, spec.image_size, &read_bar)?,
                read_images(&val_paths, spec.image_size, &read_bar)?,
            );
            read_bar.finish_and_clear();
            let c = sd.vae.config();
            let f = 1usize << c.block_out_channels.len().saturating_sub(1);
            let side = spec.image_size / f;
            anyhow::ensure!(
                spec.image_size.is_multiple_of(f),
                "--image-size {} is no multiple of the VAE's downsampling factor {f}",
                spec.image_size
            );
            let set = |pixels: Vec<f32>, seed: Option<u64>| ImageSet {
                size: spec.image_size,
                pixels,
                latent_dims: [c.latent_channels, side, side],
                seed,
                segment_len: spec.every * spec.batch_size,
            };
            let (train, val) = (
                Arc::new(set(train_pixels, Some(r.seed))),
                Arc::new(set(val_pixels, None)),
            );
            let decoder = match decoder {
                Some(d) => d,
                None => fresh_decoder::<B>(&sd.vae, r.seed, &device),
            };
            println!(
                "pre-training the VAE of {source} as a KL autoencoder (KL weight {kl_weight}) on \
                 the images of {data}: {} training and {} validation images, {} steps of {} ({} \
                 segments) into {}",
                train.len(),
                val.len(),
                spec.steps,
                spec.batch_size,
                spec.segments(),
                r.out.display()
            );
            let exported = pretrain_vae::<Autodiff<B>>(
                &sd,
                decoder,
                kl_weight,
                train,
                val,
                &spec,
                &r.out,
                &devices,
                options(&progress, "pretrain-vae"),
            )?;
            return report(&r.out, &exported);
        }

        // Encoding, then the run.
        let encode_bar = bar(&progress, "encoding captions".into());
        let encoded = Encoded::encode::<B>(
            &pairs,
            &sd,
            &tokenizer,
            spec.image_size,
            8,
            &device,
            &encode_bar,
        )?;
        encode_bar.finish_and_clear();
        let (mean_std, posterior_std) = encoded.spread();
        println!(
            "latents: posterior means of std {mean_std:.4}, posterior standard deviations of mean \
             {posterior_std:.4} (unscaled; x0 {} times {})",
            if spec.sample_posterior {
                "draws from the posterior"
            } else {
                "the posterior means"
            },
            spec.latent_scale
        );
        let draws = DrawSpec {
            seed: Some(r.seed),
            segment_len: spec.every * spec.batch_size,
            caption_dropout: spec.caption_dropout,
            latent_scale: spec.latent_scale,
            sample_posterior: spec.sample_posterior,
            schedule: NoiseSchedule::sd(),
        };
        let train = Arc::new(DenoiseSet {
            data: encoded.select(&rows(false)),
            draws: draws.clone(),
        });
        let val = Arc::new(DenoiseSet {
            data: encoded.select(&rows(true)),
            draws: DrawSpec {
                seed: None,
                ..draws
            },
        });
        println!(
            "pre-training {source} ({}) on {data}: {} training and {} validation pairs, {} \
             steps of {} ({} segments) into {}",
            if spec.train_text_encoder {
                "UNet and text encoder"
            } else {
                "UNet"
            },
            train.data.len(),
            val.data.len(),
            spec.steps,
            spec.batch_size,
            spec.segments(),
            r.out.display()
        );
        let exported = pretrain::<Autodiff<B>>(
            &sd,
            decoder,
            train,
            val,
            &spec,
            &r.out,
            &devices,
            options(&progress, "pretrain"),
        )?;
        report(&r.out, &exported)
    }
}

/// Whether the diffusers folder `path` holds a VAE decoder (its `vae/config.json` names decoder
/// blocks; the tiny profile's random weights and `pretrain`'s `unet` exports of them do not).
pub(super) fn has_decoder(path: &Path) -> bool {
    std::fs::read_to_string(path.join("vae").join("config.json"))
        .is_ok_and(|text| text.contains("\"up_block_types\""))
}

/// Prints the run's validation losses and its last export.
fn report(out: &Path, exported: &[PathBuf]) -> anyhow::Result<()> {
    let curve = super::log::LossCurve::read(&out.join("loss_curve.csv"))?;
    for (steps, loss) in &curve.valid {
        let at = |points: &[(usize, f64)]| points.iter().find(|(s, _)| s == steps).map(|p| p.1);
        let empty = at(&curve.valid_empty_caption)
            .map_or(String::new(), |v| format!("; {v:.5} with empty captions"));
        let average =
            at(&curve.valid_ema).map_or(String::new(), |v| format!("; the average's {v:.5}"));
        println!("after {steps:>7} steps: validation loss {loss:.5}{empty}{average}");
    }
    match exported.last() {
        Some(last) => println!(
            "exported {} folder(s); the last: {} (use it as --sd or in a setup's sd list)",
            exported.len(),
            last.display()
        ),
        None => println!("nothing left to train in {}", out.display()),
    }
    Ok(())
}

/// Runs `request` on `devices` (several share each batch).
pub fn run(devices: &DeviceList, request: Request) -> anyhow::Result<()> {
    dispatch_on(devices, Pretrain(request))?
}
