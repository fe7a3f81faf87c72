//! Profiles turn a recipe into a fully resolved run spec.
//!
//! - `paper`: the paper's setting (SD-1.x at 512x512, batch 32, 40 epochs, AdamW, poly lr), with
//!   weight paths per SD version and dataset roots from `--sd NAME=PATH` / `--data NAME=DIR` flags
//!   or a setup file.
//! - `tiny`: the embedded default. A tiny model of the SD architecture with seeded random frozen
//!   weights (one seed per "SD version"), SynthRS generated on first use into the cache, 64x64
//!   inputs, small decoder widths and a short schedule, so `ablation cp_adapter` finishes in
//!   minutes on a laptop CPU. It changes only values a recipe leaves at the paper's defaults,
//!   and lists every change with its reason in the run spec ([`RunSpec::profile_changes`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use diffris_data::DatasetFormat;
use diffris_data::synth::SynthConfig;
use diffris_model::adapter::CpAdapterConfig;
use diffris_model::decoder::{CamdConfig, DecoderConfig, LmpConfig, PcmrdConfig};
use diffris_model::diffris::DiffRisConfig;
use diffris_model::precision::Precision;
use diffris_model::sd::SdConfig;
use serde::{Deserialize, Serialize};

use crate::config::recipe::set::{FieldSet, apply_sets};
use crate::config::recipe::{
    AblationFile, RecipeSpec, TrainSpec, Variant, read_ron_text, ron_error,
};
use crate::config::run_spec::{ProfileChange, ProfileName, RunSpec, SdSource};
use crate::util::cache::fnv1a;

/// Where a user's weights and datasets are: `setup.ron`, overridden by command-line flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Setup {
    /// SD weights per version name (`sd11`, `sd12`, `sd14`, `sd15`): a diffusers folder or a
    /// single `.safetensors` / `.ckpt` file.
    pub sd: BTreeMap<String, PathBuf>,
    /// Dataset roots.
    pub data: BTreeMap<String, PathBuf>,
}

impl Setup {
    /// Reads a setup file (RON); errors carry `file:line:column`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        ron::from_str(&read_ron_text(path)?).map_err(|e| ron_error(path, e))
    }

    /// Adds `NAME=PATH` pairs from flags (they win over the file).
    pub fn with_flags(mut self, sd: &[String], data: &[String]) -> anyhow::Result<Self> {
        for (flags, map) in [(sd, &mut self.sd), (data, &mut self.data)] {
            for f in flags {
                let (k, v) = f.split_once('=').with_context(|| {
                    format!("`{f}` must be NAME=PATH (e.g. sd15=/weights/v1-5.safetensors)")
                })?;
                map.insert(k.to_string(), PathBuf::from(v));
            }
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.sd.is_empty() && self.data.is_empty()
    }
}

/// `--micro-batch`: samples per pass, or `auto`, the most whose pass fits the device
/// ([`crate::plan::auto_micro_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MicroBatch {
    Auto,
    Samples(usize),
}

impl std::str::FromStr for MicroBatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            n => n
                .parse()
                .map(Self::Samples)
                .map_err(|_| format!("`{s}` is neither `auto` nor a number of samples per pass")),
        }
    }
}

/// Settings from the command line that apply to every run after the profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOverrides {
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    /// `None`: the recipe's value, and under the paper profile `auto` where the recipe sets none
    /// (see [`Resolver::auto_micro_batch`]).
    pub micro_batch: Option<MicroBatch>,
    pub lr: Option<f64>,
    pub precision: Option<Precision>,
    pub limit_train: Option<usize>,
    pub limit_eval: Option<usize>,
    /// `--val-from-train N`: the recipe's `val_from_train`.
    pub val_from_train: Option<usize>,
    /// `--set PATH=VALUE`: recipe fields, applied in order before the profile.
    pub sets: Vec<FieldSet>,
}

/// The SynthRS set of the tiny profile: 64x64 tiles with three or four relatively large objects
/// (the finest frozen features are 16x16 at 64 px, see [`tiny_arch`]; an object spans several
/// of their cells).
pub fn tiny_synth() -> SynthConfig {
    SynthConfig {
        image_size: 64,
        object_scale: 4.0,
        // One epoch over 4,500 expressions (docs/DESIGN.md, section 6).
        train: 4500,
        min_objects: 3,
        max_objects: 4,
        ..SynthConfig::default()
    }
}

/// Resolves a recipe under a profile.
pub struct Resolver {
    pub profile: ProfileName,
    pub setup: Setup,
    /// Where SynthRS and random SD weights are cached.
    pub cache: PathBuf,
}

impl Resolver {
    /// The run spec of `recipe` for one variant and seed.
    pub fn resolve(
        &self,
        ablation: &str,
        variant: &str,
        label: &str,
        recipe: &RecipeSpec,
        seed: u64,
    ) -> anyhow::Result<RunSpec> {
        let mut model = recipe.model.clone();
        let mut train = recipe.train.clone();
        let mut profile_changes = Vec::new();
        let (dataset, data_root, synth, sd_source, sd_arch) = match self.profile {
            ProfileName::Paper => {
                let root = self.setup.data.get(recipe.dataset.name()).with_context(|| {
                    format!(
                        "the paper profile needs the {0} root: pass --data {0}=DIR (or put it in setup.ron)",
                        recipe.dataset.name()
                    )
                })?;
                let weights = self.setup.sd.get(&recipe.sd_weights).with_context(|| {
                    format!(
                        "the paper profile needs the {0} weights: pass --sd {0}=PATH (a diffusers folder, \
                         .safetensors or .ckpt)",
                        recipe.sd_weights
                    )
                })?;
                (
                    recipe.dataset,
                    root.clone(),
                    None,
                    SdSource::Path(weights.clone()),
                    SdConfig::sd15(),
                )
            }
            ProfileName::Tiny => {
                // The tiny profile draws its own frozen weights, or reads weights of its own
                // architecture (`diffris pretrain`'s exports of them); weights of another
                // architecture would not fit its sizes.
                for (name, path) in &self.setup.sd {
                    check_tiny_weights(name, path)?;
                }
                profile_changes = shrink_for_tiny(&mut model, &mut train);
                let (weights, arch) = match self.setup.sd.get(&recipe.sd_weights) {
                    Some(path) => {
                        let arch = SdConfig::from_diffusers_dir(path)?;
                        trained_vae_scale(
                            &recipe.sd_weights,
                            &arch,
                            &mut model,
                            &mut profile_changes,
                        );
                        (SdSource::Path(path.clone()), arch)
                    }
                    None => (
                        SdSource::Random {
                            seed: tiny_weight_seed(&recipe.sd_weights),
                        },
                        tiny_arch(),
                    ),
                };
                match self.setup.data.get(recipe.dataset.name()) {
                    // A user's dataset at the tiny architecture and input size: a CPU smoke test
                    // of real data.
                    Some(root) => (recipe.dataset, root.clone(), None, weights, arch),
                    None => {
                        let synth = tiny_synth();
                        let root = diffris_data::synth::cached_dir(&self.cache, &synth);
                        let format = DatasetFormat::Synthrs;
                        (format, root, Some(synth), weights, arch)
                    }
                }
            }
        };
        model
            .validate(&sd_arch)
            .map_err(|e| anyhow::anyhow!("{ablation}/{variant}: {}", e.within("model")))?;
        train
            .validate()
            .map_err(|e| anyhow::anyhow!("{ablation}/{variant}: {}", e.within("train")))?;
        Ok(RunSpec {
            ablation: ablation.to_string(),
            variant: variant.to_string(),
            label: label.to_string(),
            seed,
            profile: self.profile,
            dataset,
            data_root,
            synth,
            train_split: recipe.train_split.clone(),
            val_split: recipe.val_split.clone(),
            test_split: recipe.test_split.clone(),
            val_from_train: recipe.val_from_train,
            protocol: recipe.protocol,
            sd_weights: recipe.sd_weights.clone(),
            sd_unet: recipe.sd_unet,
            sd_source,
            sd_arch,
            model,
            train,
            limit_train: None,
            limit_eval: None,
            profile_changes,
        })
    }

    /// The run specs of every variant (or those in `only`) and seed (the file's, or `seeds`)
    /// of an ablation file, with `overrides` applied.
    pub fn resolve_file(
        &self,
        file: &AblationFile,
        only: &[String],
        seeds: &[u64],
        overrides: &RunOverrides,
    ) -> anyhow::Result<Vec<RunSpec>> {
        for (flag, limit) in [
            ("--limit-train", overrides.limit_train),
            ("--limit-eval", overrides.limit_eval),
        ] {
            anyhow::ensure!(
                limit != Some(0),
                "{flag} 0 leaves nothing to train or evaluate: give at least 1 sample"
            );
        }
        if let Some(unknown) = only
            .iter()
            .find(|o| !file.variants.iter().any(|v| &v.name == *o))
        {
            anyhow::bail!("--only: ablation {} has no variant `{unknown}`", file.name);
        }
        let seeds = if seeds.is_empty() {
            self.default_seeds(file)
        } else {
            seeds
        };
        let mut specs = Vec::new();
        for v in &file.variants {
            if !only.is_empty() && !only.contains(&v.name) {
                continue;
            }
            for &seed in seeds {
                specs.push(self.resolve_variant(file, v, seed, overrides)?);
            }
        }
        Ok(specs)
    }

    /// The run spec of one variant and seed of `file`, with `overrides` applied.
    pub fn resolve_variant(
        &self,
        file: &AblationFile,
        v: &Variant,
        seed: u64,
        overrides: &RunOverrides,
    ) -> anyhow::Result<RunSpec> {
        let recipe = apply_sets(&v.recipe, &overrides.sets)
            .map_err(|e| anyhow::anyhow!("{}/{}: {e}", file.name, v.name))?;
        let mut spec = self.resolve(&file.name, &v.name, &v.label, &recipe, seed)?;
        if let Some(e) = overrides.epochs {
            spec.train.epochs = e;
        }
        if let Some(b) = overrides.batch_size {
            spec.train.batch_size = b;
        }
        if let Some(MicroBatch::Samples(m)) = overrides.micro_batch {
            spec.train.micro_batch = Some(m);
        }
        if let Some(lr) = overrides.lr {
            spec.train.lr = lr;
        }
        if let Some(p) = overrides.precision {
            spec.model.precision = p;
        }
        if let Some(n) = overrides.val_from_train {
            spec.val_from_train = Some(n);
        }
        spec.train.validate().map_err(|e| {
            anyhow::anyhow!(
                "{}/{}: {} (after the command-line settings)",
                file.name,
                v.name,
                e.within("train")
            )
        })?;
        spec.limit_train = overrides.limit_train;
        spec.limit_eval = overrides.limit_eval;
        spec.check_f32_range()?;
        Ok(spec)
    }
}

impl Resolver {
    /// The seeds of `file` run when `--seeds` names none: all of them under the paper profile;
    /// the first under the tiny profile, whose one seed already takes most of the embedded
    /// default's ten minutes (`--seeds` runs more; [`Self::seeds_note`] says so).
    pub fn default_seeds<'f>(&self, file: &'f AblationFile) -> &'f [u64] {
        match self.profile {
            ProfileName::Paper => &file.seeds,
            ProfileName::Tiny => &file.seeds[..file.seeds.len().min(1)],
        }
    }

    /// The line saying that this profile runs fewer seeds than the file lists, if it does.
    pub fn seeds_note(&self, file: &AblationFile, seeds_flag: &[u64]) -> Option<String> {
        let run = self.default_seeds(file);
        (seeds_flag.is_empty() && run.len() < file.seeds.len()).then(|| {
            let all: Vec<String> = file.seeds.iter().map(u64::to_string).collect();
            format!(
                "the {} profile runs seed {} of the file's {} (one seed fits its time budget; \
                 --seeds {} runs them all)",
                format!("{:?}", self.profile).to_lowercase(),
                run.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                all.join(", "),
                all.join(","),
            )
        })
    }

    /// Whether a run resolved with `overrides` takes `--micro-batch auto`: when the flag says so,
    /// and under the paper profile when neither the flag nor the recipe sets a micro-batch (a
    /// whole batch of 32 at 512 px needs about 110 GiB). The runner then picks the micro-batch
    /// before the run starts and records it in the run's config.
    pub fn auto_micro_batch(&self, overrides: &RunOverrides, spec: &RunSpec) -> bool {
        match overrides.micro_batch {
            Some(MicroBatch::Auto) => true,
            Some(MicroBatch::Samples(_)) => false,
            None => self.profile == ProfileName::Paper && spec.train.micro_batch.is_none(),
        }
    }
}

/// The tiny profile's stand-in for an SD version: a seed derived from its name, so `sd11` ..
/// `sd15` are four different random weight sets (the tables say so).
pub fn tiny_weight_seed(name: &str) -> u64 {
    fnv1a(name.bytes())
}

/// Refuses SD weights the tiny profile cannot read: anything but a diffusers folder of
/// [`tiny_arch`] (what `diffris pretrain` exports from the tiny profile's weights).
fn check_tiny_weights(name: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let tiny_only = || {
        format!(
            "the tiny profile draws random weights of its tiny SD architecture, or reads a \
             diffusers folder of that architecture (as `diffris pretrain` writes); `{name}` \
             ({}) is not one: use --profile paper with --sd, or leave the weights out",
            path.display()
        )
    };
    anyhow::ensure!(path.is_dir(), tiny_only());
    let arch = SdConfig::from_diffusers_dir(path).with_context(tiny_only)?;
    anyhow::ensure!(is_tiny_arch(&arch), "{}: another architecture", tiny_only());
    Ok(())
}

/// Under the tiny profile, the latents of a stack whose VAE was trained (`diffris pretrain
/// --stage vae` writes the factor it measured into the folder's config; the random VAE's config
/// keeps SD's 0.18215, which the profile replaces by [`TINY_LATENT_SCALE`]) are scaled by that
/// VAE's own factor, where the profile set the factor (a recipe's own value stays); the
/// profile's recorded change says so.
fn trained_vae_scale(
    name: &str,
    arch: &SdConfig,
    model: &mut DiffRisConfig,
    changes: &mut [ProfileChange],
) {
    let own = arch.vae.scaling_factor;
    if own == tiny_arch().vae.scaling_factor {
        return;
    }
    if let Some(change) = changes.iter_mut().find(|c| c.field == "model.latent_scale") {
        model.latent_scale = own;
        change.value = format!("{own:?}");
        change.reason = format!(
            "the factor the trained VAE of `{name}` measured on its own latents (`diffris \
             pretrain --stage vae`: 1 / std of its posterior draws)"
        );
    }
}

/// Whether `arch` is the tiny profile's architecture (the latents' factor, which a trained VAE
/// measures for itself, apart).
pub fn is_tiny_arch(arch: &SdConfig) -> bool {
    let mut same = arch.clone();
    same.vae.scaling_factor = tiny_arch().vae.scaling_factor;
    same == tiny_arch()
}

/// The SD architecture of the tiny profile: the `tiny` preset with 32 latent channels instead
/// of SD-1.x's 4, a VAE of three blocks instead of four (it downsamples by 4, not 8), and one
/// attention head per UNet level. `docs/DESIGN.md` (section 6) gives the measurements behind
/// each change.
pub fn tiny_arch() -> SdConfig {
    let mut sd = SdConfig::tiny();
    sd.vae.block_out_channels = vec![16, 32, 32];
    sd.vae.latent_channels = 32;
    sd.unet.in_channels = 32;
    sd.unet.out_channels = 32;
    sd.unet.attention_heads = vec![1; 4];
    sd
}

/// Latent scale of the tiny profile's random VAE (see [`shrink_for_tiny`]); a test re-measures
/// it.
pub const TINY_LATENT_SCALE: f64 = 5.06;

/// Sets `slot` to `tiny` if it holds the paper's value, recording the change.
fn shrink<T: PartialEq + std::fmt::Debug>(
    changes: &mut Vec<ProfileChange>,
    field: &str,
    slot: &mut T,
    paper: T,
    tiny: T,
    reason: &str,
) {
    if *slot == paper && paper != tiny {
        changes.push(ProfileChange {
            field: field.into(),
            paper: format!("{paper:?}"),
            value: format!("{tiny:?}"),
            reason: reason.into(),
        });
        *slot = tiny;
    }
}

/// Sizes of the tiny profile: 64x64 inputs, narrow adapter and decoders, a short schedule. Only
/// values left at the paper's defaults change (a value a file sets is its own); returns the
/// changes.
fn shrink_for_tiny(model: &mut DiffRisConfig, train: &mut TrainSpec) -> Vec<ProfileChange> {
    let mut c = Vec::new();
    let paper = DiffRisConfig::default();
    shrink(
        &mut c,
        "model.image_size",
        &mut model.image_size,
        paper.image_size,
        (64, 64),
        "the tiny SD architecture runs at 64x64 inputs (16x16 latents) so a run takes minutes on a laptop CPU",
    );
    // The random VAE's latents scaled to unit variance (docs/DESIGN.md, section 6).
    shrink(
        &mut c,
        "model.latent_scale",
        &mut model.latent_scale,
        paper.latent_scale,
        TINY_LATENT_SCALE,
        "1 / std of the random tiny VAE's posterior means on SynthRS (SD-1.x's rule behind 0.18215): unscaled, they have std 0.198",
    );
    let adapter = CpAdapterConfig::default();
    let narrow = "the adapter sized for the tiny CLIP's 32-wide text states";
    shrink(
        &mut c,
        "model.adapter.heads",
        &mut model.adapter.heads,
        adapter.heads,
        4,
        narrow,
    );
    shrink(
        &mut c,
        "model.adapter.ffn_dim",
        &mut model.adapter.ffn_dim,
        adapter.ffn_dim,
        128,
        narrow,
    );
    // Decoder width 16 for every decoder (docs/DESIGN.md, section 6).
    let width = "decoder width 16 for every decoder (at 32 PCMRD's full-resolution mask head was the largest cost of a step)";
    match &mut model.decoder {
        DecoderConfig::Pcmrd(d) => shrink(
            &mut c,
            "model.decoder.hidden",
            &mut d.hidden,
            PcmrdConfig::default().hidden,
            16,
            width,
        ),
        DecoderConfig::Lmp(d) | DecoderConfig::Oad(d) => shrink(
            &mut c,
            "model.decoder.hidden",
            &mut d.hidden,
            LmpConfig::default().hidden,
            16,
            width,
        ),
        DecoderConfig::Camd(d) => {
            let camd = CamdConfig::default();
            shrink(
                &mut c,
                "model.decoder.hidden",
                &mut d.hidden,
                camd.hidden,
                16,
                width,
            );
            let small = "a small CAMD for the tiny profile's widths";
            shrink(
                &mut c,
                "model.decoder.layers",
                &mut d.layers,
                camd.layers,
                2,
                small,
            );
            shrink(
                &mut c,
                "model.decoder.heads",
                &mut d.heads,
                camd.heads,
                2,
                small,
            );
            shrink(
                &mut c,
                "model.decoder.attn_dim",
                &mut d.attn_dim,
                camd.attn_dim,
                64,
                "attention 4x the width, as CARIS's 1024 in 256-wide layers",
            );
            shrink(
                &mut c,
                "model.decoder.ffn_dim",
                &mut d.ffn_dim,
                camd.ffn_dim,
                64,
                small,
            );
        }
    }
    let schedule = TrainSpec::default();
    shrink(
        &mut c,
        "train.epochs",
        &mut train.epochs,
        schedule.epochs,
        1,
        "one epoch over SynthRS's 4,500 training expressions (new samples teach more than a second pass)",
    );
    shrink(
        &mut c,
        "train.batch_size",
        &mut train.batch_size,
        schedule.batch_size,
        8,
        "batch 8: enough steps in one epoch on a laptop CPU",
    );
    shrink(
        &mut c,
        "train.lr",
        &mut train.lr,
        schedule.lr,
        1e-3,
        "a larger learning rate for the one-epoch schedule",
    );
    c
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A trained VAE's factor replaces the one the profile set, and the recorded change says
    /// so; a recipe's own factor (no change recorded) and the random VAE's folder change
    /// nothing.
    #[test]
    fn a_trained_vaes_factor_replaces_the_profiles_only() {
        let mut trained = tiny_arch();
        trained.vae.scaling_factor = 0.61;
        let change = || ProfileChange {
            field: "model.latent_scale".into(),
            paper: "1.0".into(),
            value: format!("{TINY_LATENT_SCALE:?}"),
            reason: "the random VAE's".into(),
        };
        let mut model = DiffRisConfig {
            latent_scale: TINY_LATENT_SCALE,
            ..DiffRisConfig::default()
        };
        let mut changes = vec![change()];
        trained_vae_scale("sd15", &tiny_arch(), &mut model, &mut changes);
        assert_eq!(model.latent_scale, TINY_LATENT_SCALE);
        assert_eq!(changes, [change()]);
        trained_vae_scale("sd15", &trained, &mut model, &mut changes);
        assert_eq!(model.latent_scale, 0.61);
        assert_eq!(changes[0].value, "0.61");
        assert!(changes[0].reason.contains("trained VAE of `sd15`"));
        let mut own = DiffRisConfig {
            latent_scale: 2.0,
            ..DiffRisConfig::default()
        };
        trained_vae_scale("sd15", &trained, &mut own, &mut []);
        assert_eq!(own.latent_scale, 2.0);
        assert!(is_tiny_arch(&trained) && !is_tiny_arch(&SdConfig::tiny()));
    }

    const FILE: &str = r#"(
        version: 2,
        name: "p",
        title: "P",
        columns: [miou],
        variants: [
            (name: "paper_defaults", label: "defaults"),
            (name: "own", label: "own sizes", set: (
                model: (adapter: (heads: 2), decoder: pcmrd((hidden: 24))),
                train: (epochs: 3, lr: 0.01),
            )),
        ],
    )"#;

    fn tiny() -> Resolver {
        Resolver {
            profile: ProfileName::Tiny,
            setup: Setup::default(),
            cache: "/cache".into(),
        }
    }

    #[test]
    fn the_paper_profile_runs_every_seed_of_a_file_and_the_tiny_one_its_first() {
        let text = FILE.replace("columns: [miou],", "columns: [miou], seeds: [4, 1, 2],");
        let file = AblationFile::parse(&text, Path::new("p.ron")).unwrap();
        let seeds = |r: &Resolver, flag: &[u64]| -> Vec<u64> {
            r.resolve_file(&file, &["own".into()], flag, &RunOverrides::default())
                .unwrap()
                .iter()
                .map(|s| s.seed)
                .collect()
        };
        let paper = Resolver {
            profile: ProfileName::Paper,
            setup: Setup::default(),
            cache: "/cache".into(),
        };
        assert_eq!(paper.default_seeds(&file), [4, 1, 2]);
        assert_eq!(paper.seeds_note(&file, &[]), None);
        assert_eq!(tiny().default_seeds(&file), [4]);
        assert_eq!(seeds(&tiny(), &[]), [4]);
        assert_eq!(seeds(&tiny(), &[1, 2]), [1, 2], "--seeds wins");
        assert_eq!(
            tiny().seeds_note(&file, &[]).unwrap(),
            "the tiny profile runs seed 4 of the file's 4, 1, 2 (one seed fits its time budget; \
             --seeds 4,1,2 runs them all)"
        );
        assert_eq!(tiny().seeds_note(&file, &[1]), None);
    }

    fn hidden(d: &DecoderConfig) -> usize {
        match d {
            DecoderConfig::Pcmrd(c) => c.hidden,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_a_file_sets_survive_the_tiny_profile() {
        let file = AblationFile::parse(FILE, Path::new("p.ron")).unwrap();
        let specs = tiny()
            .resolve_file(&file, &[], &[], &RunOverrides::default())
            .unwrap();
        let (defaults, own) = (&specs[0], &specs[1]);
        // The file's values are the run's.
        assert_eq!(own.model.adapter.heads, 2);
        assert_eq!(hidden(&own.model.decoder), 24);
        assert_eq!((own.train.epochs, own.train.lr), (3, 0.01));
        // Values the file left at the paper's defaults are the tiny profile's.
        assert_eq!((own.model.adapter.ffn_dim, own.train.batch_size), (128, 8));
        assert_eq!(defaults.model.adapter.heads, 4);
        assert_eq!(hidden(&defaults.model.decoder), 16);
        assert_eq!((defaults.train.epochs, defaults.train.lr), (1, 1e-3));

        // Every change is listed with its reason, and only the changes.
        let fields = |s: &RunSpec| -> Vec<String> {
            s.profile_changes.iter().map(|c| c.field.clone()).collect()
        };
        let all = [
            "model.image_size",
            "model.latent_scale",
            "model.adapter.heads",
            "model.adapter.ffn_dim",
            "model.decoder.hidden",
            "train.epochs",
            "train.batch_size",
            "train.lr",
        ];
        assert_eq!(fields(defaults), all);
        let kept = [
            "model.adapter.heads",
            "model.decoder.hidden",
            "train.epochs",
            "train.lr",
        ];
        let expected: Vec<&str> = all.into_iter().filter(|f| !kept.contains(f)).collect();
        assert_eq!(fields(own), expected);
        assert!(
            defaults
                .profile_changes
                .iter()
                .all(|c| !c.reason.is_empty())
        );
        let heads = &defaults.profile_changes[2];
        assert_eq!((heads.paper.as_str(), heads.value.as_str()), ("8", "4"));
        // The run's config.ron carries the list.
        let text = own.to_ron().unwrap();
        assert!(text.contains("profile_changes") && text.contains("model.adapter.ffn_dim"));
    }

    #[test]
    fn precision_comes_from_the_file_or_the_flag_and_f32_configs_read_as_before() {
        let file = AblationFile::parse(FILE, Path::new("p.ron")).unwrap();
        let plain = tiny()
            .resolve_file(&file, &[], &[], &RunOverrides::default())
            .unwrap();
        assert_eq!(plain[0].model.precision, Precision::F32);
        // A config at f32 is written as before the field existed.
        let text = plain[0].to_ron().unwrap();
        assert!(!text.contains("precision"), "{text}");
        let flagged = tiny()
            .resolve_file(
                &file,
                &[],
                &[],
                &RunOverrides {
                    precision: Some(Precision::Bf16),
                    ..RunOverrides::default()
                },
            )
            .unwrap();
        assert_eq!(flagged[1].model.precision, Precision::Bf16);
        let text = flagged[1].to_ron().unwrap();
        assert!(text.contains("precision: Bf16"), "{text}");
        assert_eq!(
            RunSpec::parse(&text, Path::new("config.ron")).unwrap(),
            flagged[1]
        );
        // A variant sets it like any model field.
        let half = FILE.replace(
            "model: (adapter: (heads: 2),",
            "model: (precision: F16, adapter: (heads: 2),",
        );
        let file = AblationFile::parse(&half, Path::new("p.ron")).unwrap();
        let specs = tiny()
            .resolve_file(&file, &[], &[], &RunOverrides::default())
            .unwrap();
        assert_eq!(
            (specs[0].model.precision, specs[1].model.precision),
            (Precision::F32, Precision::F16)
        );
    }

    #[test]
    fn empty_sample_limits_are_refused_before_anything_runs() {
        let file = AblationFile::parse(FILE, Path::new("p.ron")).unwrap();
        let overrides = RunOverrides {
            limit_eval: Some(0),
            ..RunOverrides::default()
        };
        let err = tiny()
            .resolve_file(&file, &[], &[], &overrides)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--limit-eval 0"), "{err}");
    }

    #[test]
    fn an_invalid_value_is_an_error_naming_its_field() {
        let text = FILE.replace("heads: 2", "heads: 5");
        let file = AblationFile::parse(&text, Path::new("p.ron")).unwrap();
        let err = tiny()
            .resolve_file(&file, &[], &[], &RunOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("p/own: model.adapter.heads: 5 does not divide"),
            "{err}"
        );
        let text = FILE.replace("epochs: 3", "epochs: 0");
        let file = AblationFile::parse(&text, Path::new("p.ron")).unwrap();
        let err = tiny()
            .resolve_file(&file, &[], &[], &RunOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("p/own: train.epochs"), "{err}");
    }
}
