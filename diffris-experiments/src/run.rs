//! One run (a variant of an ablation with one seed), end to end: its directory, the resolved
//! config and environment record written before anything starts, data and frozen encoders
//! (shared between the runs of one process), training, test evaluation and the saved outputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use diffris_data::ClipTokenizer;
use diffris_model::sd::StableDiffusion;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::backend::RunTarget;
use crate::build_info::{BURN_VERSION, CRATE_VERSION, GIT_REVISION};
use crate::encoded::EncodedSplit;
use crate::encoded_cache;
use crate::evaluate::{Baselines, baselines, predict, score};
use crate::metrics::Metrics;
use crate::profile::{RunSpec, SdSource};
use crate::tensor_file::write_atomic;
use crate::training::{Trainee, train};

/// Where runs write and what they may reuse.
#[derive(Clone, Debug)]
pub struct Workspace {
    pub results: PathBuf,
    pub cache: PathBuf,
    pub threads: usize,
    /// Continue an unfinished run from its last checkpoint.
    pub resume: bool,
    /// Delete an unfinished or different run and start over.
    pub restart: bool,
    /// Stop after this many epochs (simulates an interruption; the run stays unfinished).
    pub stop_after: Option<usize>,
    pub progress: MultiProgress,
}

/// What a finished run reports (`result.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub ablation: String,
    pub variant: String,
    pub label: String,
    pub seed: u64,
    pub best_epoch: usize,
    /// The selected model on the validation split.
    pub val: Metrics,
    pub test: Metrics,
    pub baselines: Baselines,
    pub train_seconds: f64,
    pub protocol: String,
}

/// The environment record of a run (`env.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnvRecord {
    pub diffris_version: String,
    pub git_revision: String,
    pub burn_version: String,
    pub backend: String,
    pub device: String,
    pub seed: u64,
    pub started_unix: u64,
    pub command: Vec<String>,
}

/// The directory of a run.
pub fn run_dir(results: &Path, ablation: &str, variant: &str, seed: u64) -> PathBuf {
    results
        .join("runs")
        .join(ablation)
        .join(variant)
        .join(format!("seed-{seed}"))
}

/// State shared by the runs of one process: loaded SD weights and encoded splits.
pub struct Shared<B: Backend> {
    sd: HashMap<PathBuf, (StableDiffusion<B>, ClipTokenizer)>,
    encoded: HashMap<String, Arc<EncodedSplit>>,
}

impl<B: Backend> Shared<B> {
    /// The frozen SD and tokenizer at `sd_key`, loaded on first use.
    fn frozen(
        &mut self,
        spec: &RunSpec,
        sd_key: &Path,
        device: &B::Device,
    ) -> anyhow::Result<&(StableDiffusion<B>, ClipTokenizer)> {
        if !self.sd.contains_key(sd_key) {
            let frozen = crate::trained::load_frozen::<B>(sd_key, Some(&spec.sd_arch), device)?;
            self.sd.insert(sd_key.to_path_buf(), frozen);
        }
        Ok(&self.sd[sd_key])
    }
}

impl<B: Backend> Default for Shared<B> {
    fn default() -> Self {
        Self {
            sd: HashMap::new(),
            encoded: HashMap::new(),
        }
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
        .expect("valid template")
        .progress_chars("=> ")
}

impl Workspace {
    fn bar(&self, prefix: String) -> ProgressBar {
        let bar = self.progress.add(ProgressBar::new(0));
        bar.set_style(style());
        bar.set_prefix(prefix);
        bar
    }
}

/// The SD weights folder or file of a run (random weights are written to the cache once, so
/// they go through the same loader as real checkpoints).
fn sd_path<B: Backend>(
    spec: &RunSpec,
    ws: &Workspace,
    device: &B::Device,
) -> anyhow::Result<PathBuf> {
    match &spec.sd_source {
        SdSource::Path(p) => Ok(p.clone()),
        SdSource::Random { seed } => {
            let dir = random_sd_dir(spec, &ws.cache);
            if !dir.join("unet").join("config.json").is_file() {
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("sd");
                let tmp = dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&tmp);
                crate::commands::init_sd::write_random::<B>(&spec.sd_arch, *seed, &tmp, device)?;
                std::fs::rename(&tmp, &dir)
                    .with_context(|| format!("moving weights into {}", dir.display()))?;
            }
            Ok(dir)
        }
    }
}

/// Where the seeded random weights of a run's architecture live in the cache: the directory
/// names the architecture (by a hash of its config) and the seed.
pub fn random_sd_dir(spec: &RunSpec, cache: &Path) -> PathBuf {
    let seed = match spec.sd_source {
        SdSource::Random { seed } => seed,
        SdSource::Path(_) => 0,
    };
    let arch = ron::to_string(&spec.sd_arch).unwrap_or_default();
    let hash = crate::profile::fnv1a(arch.bytes());
    cache
        .join("sd-random")
        .join(format!("arch{:08x}-seed{seed}", hash as u32))
}

/// Reads and encodes one split, reusing it across runs with the same weights and data.
fn encoded_split<B: Backend>(
    spec: &RunSpec,
    split: &str,
    sd_key: &Path,
    shared: &mut Shared<B>,
    ws: &Workspace,
    device: &B::Device,
) -> anyhow::Result<Arc<EncodedSplit>> {
    let limit = if split == spec.train_split {
        spec.limit_train
    } else {
        spec.limit_eval
    };
    let key = format!(
        "{}|{}|{}|{split}|{:?}|{}|{limit:?}",
        sd_key.display(),
        spec.dataset.name(),
        spec.data_root.display(),
        spec.model.image_size,
        spec.model.latent_scale
    );
    if let Some(e) = shared.encoded.get(&key) {
        return Ok(e.clone());
    }
    let mut samples = spec
        .dataset
        .read_split(&spec.data_root, split)
        .with_context(|| format!("reading the {split} split of {}", spec.data_root.display()))?;
    if let Some(n) = limit {
        samples.truncate(n);
    }
    // Random weights and SynthRS are named after their configurations, so their encodings can
    // be kept on disk and shared by the runs' processes; a user's files could change under the
    // same path, so theirs are encoded in every process.
    let disk = cache_owned(spec).then(|| encoded_cache::path(&ws.cache, &key));
    if let Some(path) = &disk
        && let Some(enc) = encoded_cache::load(path, &key, samples.clone(), spec.model.image_size)?
    {
        let enc = Arc::new(enc);
        shared.encoded.insert(key, enc.clone());
        return Ok(enc);
    }
    let (sd, tokenizer) = shared.frozen(spec, sd_key, device)?;
    let bar = ws.bar(format!("encoding {split}"));
    let enc = EncodedSplit::encode(
        samples,
        tokenizer,
        sd,
        spec.model.image_size,
        spec.model.latent_scale,
        device,
        spec.train.batch_size,
        ws.threads,
        &bar,
    )?;
    bar.finish_and_clear();
    if let Some(path) = &disk {
        encoded_cache::save(&enc, &key, path)?;
        crate::parallel::say(
            &ws.progress,
            format!(
                "encoded the {split} split ({} samples) into {}",
                enc.len(),
                path.display()
            ),
        );
    }
    let enc = Arc::new(enc);
    shared.encoded.insert(key, enc.clone());
    Ok(enc)
}

/// Whether every input of `spec` lives in the cache under a name derived from its
/// configuration (the tiny profile's random weights and SynthRS).
fn cache_owned(spec: &RunSpec) -> bool {
    matches!(spec.sd_source, SdSource::Random { .. }) && spec.synth.is_some()
}

/// The three encoded splits of a run (train, val, test) with the SD weights at `sd_key`,
/// loading the frozen SD on first need.
fn encoded_splits<B: Backend>(
    spec: &RunSpec,
    sd_key: &Path,
    shared: &mut Shared<B>,
    ws: &Workspace,
    device: &B::Device,
) -> anyhow::Result<[Arc<EncodedSplit>; 3]> {
    let mut splits = vec![];
    for split in [&spec.train_split, &spec.val_split, &spec.test_split] {
        splits.push(encoded_split(spec, split, sd_key, shared, ws, device)?);
    }
    Ok(splits.try_into().expect("three splits"))
}

/// Before runs start in their own processes: writes what they read that is still missing (see
/// [`prepare_inputs`]) and, when their inputs are cache-owned, encodes their splits once into
/// the cache (otherwise each process encodes its own).
pub fn prepare_for_processes<B: Backend>(
    spec: &RunSpec,
    shared: &mut Shared<B>,
    ws: &Workspace,
    device: &B::Device,
) -> anyhow::Result<()> {
    let sd_key = prepare_inputs::<B>(spec, ws, device)?;
    if cache_owned(spec) {
        encoded_splits(spec, &sd_key, shared, ws, device)?;
    }
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// Serialises a run spec the way `config.ron` stores it.
pub fn spec_ron(spec: &RunSpec) -> anyhow::Result<String> {
    Ok(ron::ser::to_string_pretty(
        spec,
        ron::ser::PrettyConfig::default(),
    )?)
}

/// Loads a finished run's result, if the run directory holds one for exactly this spec.
pub fn finished(dir: &Path, spec: &RunSpec) -> anyhow::Result<Option<RunResult>> {
    let result = dir.join("result.json");
    if !result.is_file() {
        return Ok(None);
    }
    let saved = std::fs::read_to_string(dir.join("config.ron")).unwrap_or_default();
    if saved != spec_ron(spec)? {
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_str(&std::fs::read_to_string(&result)?)
            .with_context(|| format!("reading {}", result.display()))?,
    ))
}

/// Makes sure what a run reads exists: its random SD weights and its SynthRS set are written to
/// the cache when missing (for runs in their own processes, first in the parent, through
/// [`prepare_for_processes`]).
/// Returns the SD weights path.
pub fn prepare_inputs<B: Backend>(
    spec: &RunSpec,
    ws: &Workspace,
    device: &B::Device,
) -> anyhow::Result<PathBuf> {
    let sd = sd_path::<B>(spec, ws, device)?;
    if let Some(synth) = &spec.synth {
        let parent = spec.data_root.parent().unwrap_or(&ws.cache);
        let (root, created) = diffris_data::synth::ensure_cached(parent, synth)?;
        anyhow::ensure!(
            root == spec.data_root,
            "SynthRS cache path mismatch: {}",
            root.display()
        );
        if created {
            crate::parallel::say(
                &ws.progress,
                format!("generated SynthRS into {}", root.display()),
            );
        }
    }
    Ok(sd)
}

/// Runs (or reuses) one run.
pub fn run_one<B: Backend>(
    spec: &RunSpec,
    ws: &Workspace,
    shared: &mut Shared<B>,
    device: &B::Device,
    target: &RunTarget,
) -> anyhow::Result<Option<RunResult>> {
    let dir = run_dir(&ws.results, &spec.ablation, &spec.variant, spec.seed);
    if let Some(done) = finished(&dir, spec)?
        && !ws.restart
    {
        return Ok(Some(done));
    }
    let config_text = spec_ron(spec)?;
    if dir.exists() {
        let saved = std::fs::read_to_string(dir.join("config.ron")).unwrap_or_default();
        if ws.restart {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        } else if !ws.resume || saved != config_text {
            anyhow::bail!(
                "{} holds an unfinished run{}: pass --resume to continue it or --restart to start over",
                dir.display(),
                if saved != config_text {
                    " with a different config"
                } else {
                    ""
                }
            );
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join("config.ron"), config_text.as_bytes())?;
    write_json(
        &dir.join("env.json"),
        &EnvRecord {
            diffris_version: CRATE_VERSION.into(),
            git_revision: GIT_REVISION.into(),
            burn_version: BURN_VERSION.into(),
            backend: target.backend_name.clone(),
            device: format!("{} ({})", target.spec, target.device_debug),
            seed: spec.seed,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            command: std::env::args().collect(),
        },
    )?;

    // Frozen encoders and data.
    let sd_key = prepare_inputs::<B>(spec, ws, device)?;
    let [train_data, val_data, test_data] = encoded_splits(spec, &sd_key, shared, ws, device)?;
    let val_eval = val_data.clone();

    // The model: trainable parts seeded by the run's seed, frozen parts from the checkpoint.
    type AB<B> = Autodiff<B>;
    AB::<B>::seed(device, spec.seed);
    let sd_train: StableDiffusion<AB<B>> = shared
        .frozen(spec, &sd_key, device)?
        .0
        .clone()
        .train::<AB<B>>();
    let model = Trainee {
        model: spec.model.init(sd_train, device),
    };
    let _ = model.num_params(); // initialise the trainable weights now, in a fixed order

    let started = Instant::now();
    let bar = ws.bar(format!(
        "{}/{} seed {}",
        spec.ablation, spec.variant, spec.seed
    ));
    let trained = train::<AB<B>>(
        model,
        train_data,
        val_data,
        &spec.train,
        spec.seed,
        &dir,
        ws.resume,
        ws.stop_after,
        device,
        bar,
    )?;
    let train_seconds = started.elapsed().as_secs_f64();
    write_metrics_csv(&dir.join("metrics.csv"), &trained.log)?;
    if ws.stop_after.is_some_and(|s| s < spec.train.epochs) {
        return Ok(None);
    }

    let evaluate = |data: &EncodedSplit, name: &str| -> anyhow::Result<Metrics> {
        let bar = ws.bar(format!("evaluating {name}"));
        let probs = predict(
            &trained.model.model,
            data,
            spec.train.batch_size,
            device,
            &bar,
        );
        bar.finish_and_clear();
        score(&probs, data, spec.protocol)
    };
    let val = evaluate(&val_eval, "val")?;
    let test = evaluate(&test_data, "test")?;
    let result = RunResult {
        ablation: spec.ablation.clone(),
        variant: spec.variant.clone(),
        label: spec.label.clone(),
        seed: spec.seed,
        best_epoch: trained.best_epoch,
        val,
        test,
        baselines: baselines(&test_data)?,
        train_seconds,
        protocol: spec.protocol.label().into(),
    };
    let mut store = SafetensorsStore::from_file(dir.join("model.safetensors")).overwrite(true);
    trained
        .model
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("saving the trained adapter and decoder: {e}"))?;
    write_json(&dir.join("result.json"), &result)?;
    Ok(Some(result))
}

/// `metrics.csv`: one row per epoch with the training and validation numbers.
pub fn write_metrics_csv(path: &Path, log: &crate::training::EpochLog) -> anyhow::Result<()> {
    let train = log.split("train");
    let valid = log.split("valid");
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
