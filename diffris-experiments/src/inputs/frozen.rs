//! The frozen Stable Diffusion stack of a run: where its weights are (a user's checkpoint, or
//! seeded random weights written to the cache once so they go through the same loader), loading
//! them with the tokenizer that belongs to them, and the check that the two fit together.

use diffris_kernels::SdBackend;
use std::path::{Path, PathBuf};

use anyhow::Context;
use diffris_data::ClipTokenizer;
use diffris_model::sd::{SdConfig, StableDiffusion};
use diffris_model::weights::UnetWeights;

use crate::config::run_spec::{RunSpec, SdSource};
use crate::device::backend::weights_generator;
use crate::util::cache::fnv1a;
use crate::util::lock::{lock_path, lock_waiting};

/// The frozen SD stack at `path` and its tokenizer: a diffusers folder's own `tokenizer/` when
/// it has one, else the embedded CLIP vocabulary. A diffusers folder's architecture comes from
/// its `config.json` files; a single file uses `arch` (required then). The two are checked to
/// belong together here, once ([`check_vocab`]): every id the tokenizer produces has an
/// embedding in the text encoder.
///
/// A single file holding the UNet twice (trained and EMA) is read for its EMA set, with a line
/// on stderr saying so (nothing for files with one set).
pub fn load_frozen<B: SdBackend>(
    path: &Path,
    arch: Option<&SdConfig>,
    device: &B::Device,
) -> anyhow::Result<(StableDiffusion<B>, ClipTokenizer)> {
    load_frozen_with::<B>(path, arch, UnetWeights::Ema, device, &|l| eprintln!("{l}"))
}

/// [`load_frozen`] reading the UNet set `unet` of a file holding two, and telling `say` which.
pub fn load_frozen_with<B: SdBackend>(
    path: &Path,
    arch: Option<&SdConfig>,
    unet: UnetWeights,
    device: &B::Device,
    say: &dyn Fn(String),
) -> anyhow::Result<(StableDiffusion<B>, ClipTokenizer)> {
    let (sd, read) = StableDiffusion::<B>::load_with(path, arch, unet, device)
        .with_context(|| format!("loading Stable Diffusion from {}", path.display()))?;
    if let Some(set) = read {
        say(unet_set_line(path, set));
    }
    let tokenizer = if path.join("tokenizer").join("vocab.json").is_file() {
        ClipTokenizer::from_diffusers_dir(path)?
    } else {
        ClipTokenizer::embedded()?
    };
    check_vocab(tokenizer.id_count(), sd.text_encoder.config().vocab_size)
        .with_context(|| format!("loading Stable Diffusion from {}", path.display()))?;
    Ok((sd, tokenizer))
}

/// The line saying which UNet set of a two-set checkpoint was read.
fn unet_set_line(path: &Path, set: UnetWeights) -> String {
    match set {
        UnetWeights::Ema => format!(
            "{} holds the UNet twice: read its EMA weights (model_ema.*), as released pipelines \
             do; `sd_unet: non_ema` in the recipe reads the trained ones",
            path.display()
        ),
        UnetWeights::NonEma => format!(
            "{} holds the UNet twice: read its trained (non-EMA) weights, as the recipe's \
             `sd_unet: non_ema` asks",
            path.display()
        ),
    }
}

/// [`load_frozen`] with the architecture named by a preset (`sd15`, `tiny`), for single files.
pub fn load_frozen_preset<B: SdBackend>(
    path: &Path,
    arch: Option<&str>,
    device: &B::Device,
) -> anyhow::Result<(StableDiffusion<B>, ClipTokenizer)> {
    let arch = match arch {
        Some(name) => Some(
            SdConfig::preset(name)
                .with_context(|| format!("unknown --arch `{name}` (sd15 or tiny)"))?,
        ),
        None => None,
    };
    load_frozen::<B>(path, arch.as_ref(), device)
}

/// A tokenizer of `ids` ids fits a text encoder of `vocab_size` embeddings when each of its
/// ids has one.
pub fn check_vocab(ids: usize, vocab_size: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        ids <= vocab_size,
        "the tokenizer produces ids up to {} but the text encoder has only {vocab_size} \
         embeddings; the checkpoint and the tokenizer do not belong together",
        ids.saturating_sub(1)
    );
    Ok(())
}

/// Writes seeded random weights of `arch` to `out` (a diffusers-style folder).
pub fn write_random<B: SdBackend>(
    arch: &SdConfig,
    seed: u64,
    out: &Path,
    device: &B::Device,
) -> anyhow::Result<()> {
    B::seed(device, seed);
    let sd = arch.init::<B>(device);
    sd.save_diffusers(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Where the seeded random weights of an architecture live in the cache: the folder names the
/// architecture (by a hash of its config), the seed and the generator that drew them
/// ([`weights_generator`], which carries the version). (Before version 1 the name held only the
/// first two: `generator: None` gives that name, for runs trained then.)
pub fn random_sd_dir(arch: &SdConfig, seed: u64, generator: Option<&str>, cache: &Path) -> PathBuf {
    let arch = ron::to_string(arch).unwrap_or_default();
    let hash = fnv1a(arch.bytes());
    let mut name = format!("arch{:08x}-seed{seed}", hash as u32);
    if let Some(generator) = generator {
        name.push_str(&format!("-{generator}"));
    }
    cache.join("sd-random").join(name)
}

/// The SD weights folder or file a run reads, without writing anything; random weights are
/// those `generator` draws (see [`random_sd_dir`]).
pub fn sd_location(spec: &RunSpec, cache: &Path, generator: Option<&str>) -> PathBuf {
    match &spec.sd_source {
        SdSource::Path(p) => p.clone(),
        SdSource::Random { seed } => random_sd_dir(&spec.sd_arch, *seed, generator, cache),
    }
}

/// The SD weights folder or file of a run; random weights missing from the cache are written
/// first (into a temporary folder moved into place, so a crash leaves nothing half-written).
/// `generator` names the random weights the run reads ([`random_sd_dir`]): this backend's for a
/// new run, the recorded one for a resumed run, which continues with the weights it started
/// with. Only this backend's weights can be drawn here; others missing from the cache are an
/// error.
pub fn provision<B: SdBackend>(
    spec: &RunSpec,
    cache: &Path,
    device: &B::Device,
    generator: Option<&str>,
) -> anyhow::Result<PathBuf> {
    match &spec.sd_source {
        SdSource::Path(p) => Ok(p.clone()),
        SdSource::Random { seed } => {
            provision_random::<B>(&spec.sd_arch, *seed, cache, device, generator)
        }
    }
}

/// The cache folder of the random weights of `arch` drawn from `seed` by `generator`, written
/// first when missing (see [`provision`]).
pub fn provision_random<B: SdBackend>(
    arch: &SdConfig,
    seed: u64,
    cache: &Path,
    device: &B::Device,
    generator: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let dir = random_sd_dir(arch, seed, generator, cache);
    let present = |dir: &Path| dir.join("unet").join("config.json").is_file();
    if !present(&dir) {
        let here = weights_generator::<B>(device);
        anyhow::ensure!(
            generator == Some(here.as_str()),
            "{} is missing: this run was started with random weights drawn by {}, which this \
             backend ({here}) cannot draw; resume it with the backend and --cache it started \
             with, or --restart it",
            dir.display(),
            generator.map_or(
                "an older build (before the cache named their generator)",
                |g| g
            )
        );
        // Another process may be writing the same weights: wait for it, then reuse them.
        let _lock = lock_waiting(&lock_path(&dir), |owner| {
            eprintln!("waiting for {owner}, which is writing {}", dir.display())
        })?;
        if present(&dir) {
            return Ok(dir);
        }
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("sd");
        let tmp = dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        // Under the lock: what interrupted writes of these weights left (any process's) goes.
        if let Some(parent) = dir.parent() {
            diffris_data::synth::remove_partials(parent, name);
        }
        write_random::<B>(arch, seed, &tmp, device)?;
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("moving weights into {}", dir.display()))?;
    }
    Ok(dir)
}
