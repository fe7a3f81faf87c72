//! What a run reads before it trains: its frozen SD weights and dataset (written to the cache
//! first where the tiny profile generates them), and its three splits encoded by the frozen
//! VAE and CLIP, shared by the runs of one process and, where the cache owns every input, kept
//! on disk for the runs of other processes.

use diffris_kernels::SdBackend;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diffris_data::{ClipTokenizer, Sample};
use diffris_model::precision::{Precision, cast_module};
use diffris_model::sd::StableDiffusion;
use diffris_model::weights::UnetWeights;

use crate::config::run_spec::{RunSpec, SdSource};
use crate::inputs::encoded_cache;
use crate::inputs::frozen::{load_frozen_with, provision};
use crate::inputs::split::EncodedSplit;
use crate::runner::workspace::Workspace;
use crate::util::lock::{lock_path, lock_waiting};
use crate::util::progress::say;

/// State shared by the runs of one process: loaded SD weights and encoded splits.
pub struct Shared<B: SdBackend> {
    sd: HashMap<(PathBuf, Precision, UnetWeights), (StableDiffusion<B>, ClipTokenizer)>,
    encoded: HashMap<String, Arc<EncodedSplit>>,
}

impl<B: SdBackend> Default for Shared<B> {
    fn default() -> Self {
        Self {
            sd: HashMap::new(),
            encoded: HashMap::new(),
        }
    }
}

impl<B: SdBackend> Shared<B> {
    /// The frozen SD at `sd_key`, in the precision of `spec`'s model, and its tokenizer,
    /// loaded on first use.
    pub fn frozen(
        &mut self,
        spec: &RunSpec,
        sd_key: &Path,
        device: &B::Device,
        say: &dyn Fn(String),
    ) -> anyhow::Result<&(StableDiffusion<B>, ClipTokenizer)> {
        let key = (sd_key.to_path_buf(), spec.model.precision, spec.sd_unet);
        if !self.sd.contains_key(&key) {
            let (sd, tokenizer) =
                load_frozen_with::<B>(sd_key, Some(&spec.sd_arch), spec.sd_unet, device, say)?;
            self.sd.insert(
                key.clone(),
                (cast_module(sd, spec.model.precision), tokenizer),
            );
        }
        Ok(&self.sd[&key])
    }

    /// Reads and encodes one split, reusing it across runs with the same weights and data.
    fn encoded_split(
        &mut self,
        spec: &RunSpec,
        split: &str,
        sd_key: &Path,
        ws: &Workspace,
        device: &B::Device,
    ) -> anyhow::Result<Arc<EncodedSplit>> {
        let limit = if split == spec.train_split {
            spec.limit_train
        } else {
            spec.limit_eval
        };
        let key = split_key(spec, split, limit, sd_key, &B::name(device));
        if let Some(e) = self.encoded.get(&key) {
            return Ok(e.clone());
        }
        let say = |line: String| say(&ws.progress, line);
        let enc = cached_split::<B>(
            spec,
            split,
            limit,
            sd_key,
            &ws.cache,
            device,
            &say,
            |samples, path, key| {
                let (sd, tokenizer) = self.frozen(spec, sd_key, device, &say)?;
                let bar = ws.bar(format!("encoding {split}"));
                // Batches and threads that fit the device beside the frozen weights.
                let plan = crate::plan::Plan::of::<B>(spec, device, 1, &ws.budget, ws.threads);
                let enc =
                    encode_into(spec, samples, sd, tokenizer, device, &plan, &bar, path, key)?;
                bar.finish_and_clear();
                Ok(enc)
            },
        )?;
        let enc = Arc::new(enc);
        self.encoded.insert(key, enc.clone());
        Ok(enc)
    }

    /// The three encoded splits of a run (train, val, test) with the SD weights at `sd_key`,
    /// loading the frozen SD on first need.
    pub fn encoded_splits(
        &mut self,
        spec: &RunSpec,
        sd_key: &Path,
        ws: &Workspace,
        device: &B::Device,
    ) -> anyhow::Result<[Arc<EncodedSplit>; 3]> {
        let mut splits = vec![];
        for split in [&spec.train_split, &spec.val_split, &spec.test_split] {
            splits.push(self.encoded_split(spec, split, sd_key, ws, device)?);
        }
        Ok(splits.try_into().expect("three splits"))
    }
}

/// The encoding of `split` (its first `limit` samples) of `spec`'s dataset with the SD weights at
/// `sd_key` on backend `B`: read from the encoded cache under `cache` when it holds it (keyed by
/// the configuration, what computes it and the fingerprints of the files read: a dataset or
/// weights changed under the same path make a new encoding), else computed by `encode` (given the
/// samples, the file to write and its key) and written there. While one process encodes a split,
/// another that needs it waits, then reads it. Prints where a new encoding went, and a warning
/// when every mask of the split is empty.
#[allow(clippy::too_many_arguments)]
pub fn cached_split<B: SdBackend>(
    spec: &RunSpec,
    split: &str,
    limit: Option<usize>,
    sd_key: &Path,
    cache: &Path,
    device: &B::Device,
    say: &dyn Fn(String),
    encode: impl FnOnce(Vec<Sample>, &Path, &str) -> anyhow::Result<EncodedSplit>,
) -> anyhow::Result<EncodedSplit> {
    let key = split_key(spec, split, limit, sd_key, &B::name(device));
    let mut samples = crate::inputs::held_out::read_split(spec, split)?;
    if let Some(n) = limit {
        samples.truncate(n);
    }
    let disk_key = format!(
        "{key}|data {:016x}|weights {:016x}",
        crate::inputs::fingerprint::samples(&samples)?,
        crate::inputs::fingerprint::weights(sd_key)?
    );
    let path = encoded_cache::path(cache, &disk_key);
    let load = || encoded_cache::load(&path, &disk_key, samples.clone(), spec.model.image_size);
    // Held until this split is written: another process encoding it waits, then reuses it.
    let mut _lock = None;
    let mut cached = load()?;
    if cached.is_none() {
        _lock = Some(lock_waiting(&lock_path(&path), |owner| {
            say(format!(
                "waiting for {owner}, which is encoding {}",
                path.display()
            ))
        })?);
        cached = load()?;
    }
    let enc = match cached {
        Some(enc) => enc,
        None => {
            let enc = encode(samples, &path, &disk_key)?;
            say(format!(
                "encoded the {split} split ({} samples) into {}",
                enc.len(),
                path.display()
            ));
            enc
        }
    };
    if let Some(w) = enc.empty_mask_warning(split, &spec.data_root) {
        say(w);
    }
    Ok(enc)
}

/// Encodes `samples` at `spec`'s input size and latent scale with `sd`, in the batches and
/// threads of `plan`, into the cache file `path` under `key` ([`EncodedSplit::encode`]).
#[allow(clippy::too_many_arguments)]
pub fn encode_into<B: SdBackend>(
    spec: &RunSpec,
    samples: Vec<Sample>,
    sd: &StableDiffusion<B>,
    tokenizer: &ClipTokenizer,
    device: &B::Device,
    plan: &crate::plan::Plan,
    bar: &indicatif::ProgressBar,
    path: &Path,
    key: &str,
) -> anyhow::Result<EncodedSplit> {
    EncodedSplit::encode(
        samples,
        tokenizer,
        sd,
        spec.model.image_size,
        spec.model.latent_scale,
        device,
        plan.encode.batch,
        plan.encode.workers,
        bar,
        path,
        key,
    )
}

/// What identifies a split's encoding: its configuration (weights, dataset, split, image size,
/// latent scale, sample limit, precision) and what computes it (`backend`, the CPU's vector
/// kernels, the build's [`ENCODER_SOURCES`](crate::util::build_info::ENCODER_SOURCES) digest): a cached
/// split is what this binary would compute here, or it is not used.
fn split_key(
    spec: &RunSpec,
    split: &str,
    limit: Option<usize>,
    sd_key: &Path,
    backend: &str,
) -> String {
    let mut key = format!(
        "{}|{}|{}|{split}|{:?}|{}|{limit:?}",
        sd_key.display(),
        spec.dataset.name(),
        spec.data_root.display(),
        spec.model.image_size,
        spec.model.latent_scale
    );
    if !spec.model.precision.is_f32() {
        key.push_str(&format!("|{}", spec.model.precision));
    }
    if let Some(n) = spec.val_from_train {
        key.push_str(&format!("|val_from_train {n}"));
    }
    if !spec.sd_unet.is_default() {
        key.push_str(&format!("|unet {:?}", spec.sd_unet));
    }
    key.push_str(&format!(
        "|{backend}|{}|src {}",
        crate::records::CpuRecord::detect().features.join("+"),
        crate::util::build_info::ENCODER_SOURCES
    ));
    key
}

/// Checks, before anything runs (also for `--dry-run`), that the files a run reads from outside
/// the cache exist: its SD weights and its dataset root. (Random weights and SynthRS are made
/// in the cache when missing.)
pub fn check_inputs_exist(spec: &RunSpec) -> anyhow::Result<()> {
    let run = format!("{}/{}", spec.ablation, spec.variant);
    if let SdSource::Path(p) = &spec.sd_source {
        anyhow::ensure!(
            p.exists(),
            "{run}: the SD weights `{}` are set to {}, which does not exist",
            spec.sd_weights,
            p.display()
        );
        // A diffusers folder says its architecture: it must be the one the run records and
        // plans memory for. (A single file is checked when its keys are read.)
        if p.is_dir() {
            let found = diffris_model::sd::SdConfig::from_diffusers_dir(p)?;
            let differences = diffris_model::weights::config_differences(&found, &spec.sd_arch);
            anyhow::ensure!(
                differences.is_empty(),
                "{run}: the SD weights `{}` at {} are not of the architecture the run is \
                 configured with: {}",
                spec.sd_weights,
                p.display(),
                differences.join(", ")
            );
        }
    }
    if spec.synth.is_none() {
        anyhow::ensure!(
            spec.data_root.is_dir(),
            "{run}: the {} root {} is not a directory",
            spec.dataset.name(),
            spec.data_root.display()
        );
        // A split file that is missing is said now, not after the splits before it are encoded.
        let val = spec.val_from_train.is_none().then_some(&spec.val_split);
        for split in [Some(&spec.train_split), val, Some(&spec.test_split)]
            .into_iter()
            .flatten()
        {
            let Some(file) = spec.dataset.split_file(&spec.data_root, split) else {
                continue;
            };
            anyhow::ensure!(
                file.is_file(),
                "{run}: the {} root has no {split} split: {} does not exist{}",
                spec.dataset.name(),
                file.display(),
                if split == &spec.val_split {
                    " (RISBench's public download has none: pass --val-from-train N, or set \
                     `val_from_train: N` in the recipe, to validate on about N expressions held \
                     out of the training split)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// Makes sure what a run reads exists: its random SD weights and its SynthRS set are written to
/// the cache when missing (for runs in their own processes, first in the parent, through
/// [`prepare_for_processes`]). Returns the SD weights path.
pub fn prepare_inputs<B: SdBackend>(
    spec: &RunSpec,
    ws: &Workspace,
    device: &B::Device,
    generator: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let sd = provision::<B>(spec, &ws.cache, device, generator)?;
    if let Some(synth) = &spec.synth {
        let parent = spec.data_root.parent().unwrap_or(&ws.cache);
        // Another process may be generating the same set: wait for it, then reuse it.
        let _lock = if spec.data_root.exists() {
            None
        } else {
            Some(lock_waiting(&lock_path(&spec.data_root), |owner| {
                say(
                    &ws.progress,
                    format!(
                        "waiting for {owner}, which is generating {}",
                        spec.data_root.display()
                    ),
                )
            })?)
        };
        let (root, created) = diffris_data::synth::ensure_cached(parent, synth)?;
        anyhow::ensure!(
            root == spec.data_root,
            "SynthRS cache path mismatch: {}",
            root.display()
        );
        if created {
            say(
                &ws.progress,
                format!("generated SynthRS into {}", root.display()),
            );
        }
    }
    Ok(sd)
}

/// Before runs start in their own processes: writes what they read that is still missing (see
/// [`prepare_inputs`]) and encodes their splits once into the cache, where each process reads
/// them.
pub fn prepare_for_processes<B: SdBackend>(
    spec: &RunSpec,
    shared: &mut Shared<B>,
    ws: &Workspace,
    device: &B::Device,
    generator: Option<&str>,
) -> anyhow::Result<()> {
    let sd_key = prepare_inputs::<B>(spec, ws, device, generator)?;
    shared.encoded_splits(spec, &sd_key, ws, device)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input of the encoding, and what computes it, tells keys apart.
    #[test]
    fn split_keys_name_configuration_backend_and_build() {
        let spec = RunSpec::example();
        let key = |spec: &RunSpec, split: &str, limit, backend: &str| {
            split_key(spec, split, limit, Path::new("/w"), backend)
        };
        let base = key(&spec, "train", None, "flex");
        assert_eq!(
            base,
            key(&spec.clone(), "train", None, "flex"),
            "deterministic"
        );
        let mut half = spec.clone();
        half.model.precision = Precision::Bf16;
        let mut larger = spec.clone();
        larger.model.image_size = (1024, 1024);
        let mut held_out = spec.clone();
        held_out.val_from_train = Some(100);
        let mut non_ema = spec.clone();
        non_ema.sd_unet = UnetWeights::NonEma;
        for other in [
            key(&held_out, "train", None, "flex"),
            key(&non_ema, "train", None, "flex"),
            key(&spec, "val", None, "flex"),
            key(&spec, "train", Some(3), "flex"),
            key(&spec, "train", None, "cuda"),
            key(&half, "train", None, "flex"),
            key(&larger, "train", None, "flex"),
        ] {
            assert_ne!(base, other);
        }
        let build = crate::util::build_info::ENCODER_SOURCES;
        assert_eq!(build.len(), 16, "a 64-bit digest in hex: {build}");
        assert!(base.ends_with(&format!("|src {build}")), "{base}");
    }
}
