//! Loading the frozen Stable Diffusion components from the checkpoints researchers have:
//!
//! - an original single-file LDM checkpoint, `.safetensors` (`v1-5-pruned-emaonly.safetensors`)
//!   or a PyTorch `.ckpt` (`sd-v1-4.ckpt`), whose architecture must be given (`SdConfig::sd15()`);
//! - a diffusers folder (`unet/`, `vae/`, `text_encoder/`), whose architecture is read from each
//!   component's `config.json`.
//!
//! Loading is strict: a parameter without its key, a key with the wrong shape, or a checkpoint
//! key no rule uses is an error naming the key (see [`keys`] for every rule and for the keys
//! skipped on purpose). F16 and BF16 tensors are widened to f32.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use diffris_model::sd::{SdConfig, StableDiffusion};
//! let device = Default::default();
//! let sd: StableDiffusion<Flex> = StableDiffusion::load(
//!     "v1-5-pruned-emaonly.safetensors".as_ref(),
//!     Some(&SdConfig::sd15()),
//!     &device,
//! )?;
//! let sd: StableDiffusion<Flex> =
//!     StableDiffusion::load("stable-diffusion-v1-5/".as_ref(), None, &device)?;
//! # Ok::<(), diffris_model::ModelError>(())
//! ```

pub mod apply;
pub mod archive;
pub mod checkpoint;
pub mod keys;
pub mod save;
pub mod vae_decoder;

use diffris_kernels::SdBackend;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn_store::ModuleSnapshot;

use self::apply::{ParamInfo, param_infos};
use self::checkpoint::Checkpoint;
use self::keys::{Component, diffusers_keys, is_ignored_key, ldm_key};
use crate::error::{ModelError, Result};
use crate::sd::config::{ClipConfig, SdConfig, UNetConfig, VaeConfig};
use crate::sd::config_json::read_json_object;
use crate::sd::stack::StableDiffusion;

/// Fills `module` from `ckpt` and records the keys it used.
pub(crate) fn load_component<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    ckpt: &Checkpoint,
    key_of: impl Fn(&ParamInfo) -> Vec<String>,
    used: &mut BTreeSet<String>,
) -> Result<()> {
    let params = param_infos::<B, M>(module);
    let shape_of = |k: &str| ckpt.tensors.get(k).map(|s| s.shape.to_vec());
    let keys = apply::resolve(&params, key_of, shape_of, &ckpt.path)?;
    let sources: Vec<_> = keys.iter().map(|k| &ckpt.tensors[k]).collect();
    used.extend(keys);
    apply::apply::<B, M>(module, &params, &sources, &ckpt.path)
}

/// Errors with every key of `ckpt` that is neither used nor skipped on purpose.
fn check_unused(ckpt: &Checkpoint, used: &BTreeSet<String>) -> Result<()> {
    unused_error(ckpt.keys(), used, &ckpt.path)
}

fn unused_error<'a>(
    keys: impl Iterator<Item = &'a String>,
    used: &BTreeSet<String>,
    path: &Path,
) -> Result<()> {
    let unused: Vec<String> = keys
        .filter(|k| !used.contains(*k) && !is_ignored_key(k))
        .cloned()
        .collect();
    if unused.is_empty() {
        Ok(())
    } else {
        Err(ModelError::UnusedKeys {
            path: path.to_path_buf(),
            keys: unused,
        })
    }
}

/// Where a list of checkpoint keys comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLayout {
    /// An original single-file LDM checkpoint (all three components).
    SingleFile,
    /// The weight file of one component of a diffusers folder.
    Diffusers(Component),
}

/// Checks, without reading any tensor data and without allocating the model, that a checkpoint
/// holding exactly `keys` (with their shapes) fills the architecture `arch`: every parameter
/// finds its key with the right shape, and every key is used or skipped on purpose. Returns
/// the number of keys used.
pub fn verify_key_list<B: SdBackend>(
    arch: &SdConfig,
    layout: KeyLayout,
    keys: &std::collections::BTreeMap<String, Vec<usize>>,
    source: &Path,
    device: &B::Device,
) -> Result<usize> {
    let sd = arch.init::<B>(device);
    let shape_of = |k: &str| keys.get(k).cloned();
    let mut used = BTreeSet::new();
    let components = [
        (Component::Unet, param_infos::<B, _>(&sd.unet)),
        (Component::Vae, param_infos::<B, _>(&sd.vae)),
        (Component::Clip, param_infos::<B, _>(&sd.text_encoder)),
    ];
    for (component, params) in components {
        let resolved = match layout {
            KeyLayout::SingleFile => apply::resolve(
                &params,
                ldm_candidates(component, &arch.unet),
                shape_of,
                source,
            )?,
            KeyLayout::Diffusers(c) if c == component => apply::resolve(
                &params,
                |p| diffusers_keys(component, &p.path),
                shape_of,
                source,
            )?,
            KeyLayout::Diffusers(_) => continue,
        };
        used.extend(resolved);
    }
    unused_error(keys.keys(), &used, source)?;
    Ok(used.len())
}

impl SdConfig {
    /// The architecture of a diffusers folder, read from its components' `config.json` files
    /// and validated.
    pub fn from_diffusers_dir(dir: &Path) -> Result<Self> {
        let config = |component: &str| dir.join(component).join("config.json");
        let arch = SdConfig {
            unet: UNetConfig::from_diffusers_json(
                &read_json_object(&config("unet"))?,
                &config("unet"),
            )?,
            vae: VaeConfig::from_diffusers_json(
                &read_json_object(&config("vae"))?,
                &config("vae"),
            )?,
            clip: ClipConfig::from_transformers_json(
                &read_json_object(&config("text_encoder"))?,
                &config("text_encoder"),
            )?,
        };
        arch.validate()
            .map_err(|m| ModelError::config(dir, m.to_string()))?;
        Ok(arch)
    }
}

/// The fields in which `found` differs from `expected`, as `unet.block_out_channels [32, 64]
/// (expected [320, 640, 1280, 1280])`.
pub fn config_differences(found: &SdConfig, expected: &SdConfig) -> Vec<String> {
    fn walk(at: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                for (k, v) in x {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    walk(&path, v, y.get(k).unwrap_or(&serde_json::Value::Null), out);
                }
            }
            _ if a != b => out.push(format!("{at} {a} (expected {b})")),
            _ => {}
        }
    }
    let as_json = |c: &SdConfig| serde_json::to_value(c).expect("a config serialises");
    let mut out = Vec::new();
    walk("", &as_json(found), &as_json(expected), &mut out);
    out
}

/// The architecture a single-file checkpoint at `path` is read as: `arch`, which must be given
/// (such a file does not say its own).
pub(crate) fn single_file_arch<'a>(
    path: &Path,
    arch: Option<&'a SdConfig>,
) -> Result<&'a SdConfig> {
    arch.ok_or_else(|| {
        ModelError::config(
            path,
            "a single-file checkpoint does not say its architecture: pass one (e.g. sd15)",
        )
    })
}

/// Which UNet weights a single-file checkpoint is read for when it holds two sets: the
/// trained weights (`model.diffusion_model.*`) and their exponential moving average
/// (`model_ema.*`, as full-EMA releases such as `sd-v1-4-full-ema.ckpt` and
/// `v1-5-pruned.ckpt` carry them). Released pipelines run the EMA weights (the `-emaonly` files
/// and the diffusers folders hold those alone), so EMA is the default.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum UnetWeights {
    #[default]
    Ema,
    NonEma,
}

impl UnetWeights {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The key LDM's `LitEma` stores the moving average of `ldm_key` under: the parameter's name
/// below `model.` without its dots, under `model_ema.`
/// (`model.diffusion_model.out.2.bias` -> `model_ema.diffusion_modelout2bias`).
pub fn ema_key(ldm_key: &str) -> String {
    let name = ldm_key.strip_prefix("model.").unwrap_or(ldm_key);
    format!("model_ema.{}", name.replace('.', ""))
}

/// Whether a checkpoint holds EMA weights of the UNet.
fn has_unet_ema(ckpt: &Checkpoint) -> bool {
    ckpt.keys()
        .any(|k| k.starts_with("model_ema.diffusion_model"))
}

/// The candidate keys of a parameter in a single-file LDM checkpoint.
fn ldm_candidates(
    component: Component,
    unet: &UNetConfig,
) -> impl Fn(&ParamInfo) -> Vec<String> + '_ {
    move |p| {
        diffusers_keys(component, &p.path)
            .iter()
            .map(|k| ldm_key(component, k, unet))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

impl<B: SdBackend> StableDiffusion<B> {
    /// Loads a diffusers folder (which must be of `arch` when one is named) or a single-file
    /// checkpoint (`arch` required).
    pub fn load(path: &Path, arch: Option<&SdConfig>, device: &B::Device) -> Result<Self> {
        Self::load_with(path, arch, UnetWeights::Ema, device).map(|(sd, _)| sd)
    }

    /// [`Self::load`] reading the UNet set `unet` from a single file that holds two; also
    /// returns the set read when there was a choice (`None`: one set, as in every diffusers
    /// folder and `-emaonly` file).
    pub fn load_with(
        path: &Path,
        arch: Option<&SdConfig>,
        unet: UnetWeights,
        device: &B::Device,
    ) -> Result<(Self, Option<UnetWeights>)> {
        if path.is_dir() {
            if let Some(expected) = arch {
                let found = SdConfig::from_diffusers_dir(path)?;
                let differences = config_differences(&found, expected);
                if !differences.is_empty() {
                    return Err(ModelError::config(
                        path,
                        format!(
                            "this folder holds another architecture than the one it is read as: \
                             {} (a run records and plans for the architecture it names)",
                            differences.join(", ")
                        ),
                    ));
                }
            }
            Self::from_diffusers(path, device).map(|sd| (sd, None))
        } else {
            Self::from_single_file_with(path, single_file_arch(path, arch)?, unet, device)
        }
    }

    /// Loads an original single-file LDM checkpoint (`.safetensors` or `.ckpt`), its UNet's EMA
    /// weights when it holds them.
    pub fn from_single_file(path: &Path, arch: &SdConfig, device: &B::Device) -> Result<Self> {
        Self::from_single_file_with(path, arch, UnetWeights::Ema, device).map(|(sd, _)| sd)
    }

    /// Loads a single-file checkpoint reading the UNet set `unet` where the file holds both;
    /// also returns the set read when it had a choice (`None`: the file holds one set).
    pub fn from_single_file_with(
        path: &Path,
        arch: &SdConfig,
        unet: UnetWeights,
        device: &B::Device,
    ) -> Result<(Self, Option<UnetWeights>)> {
        arch.validate()
            .map_err(|m| ModelError::config(path, m.to_string()))?;
        let ckpt = Checkpoint::open(path)?;
        let mut sd = arch.init::<B>(device);
        let mut used = BTreeSet::new();
        let unet_cfg = arch.unet.clone();
        let choice = has_unet_ema(&ckpt).then_some(unet);
        let plain = ldm_candidates(Component::Unet, &unet_cfg);
        let ema = |p: &ParamInfo| plain(p).iter().map(|k| ema_key(k)).collect::<Vec<_>>();
        if choice == Some(UnetWeights::Ema) {
            load_component::<B, _>(&mut sd.unet, &ckpt, ema, &mut used)?;
            // The set not read is skipped on purpose (each of its keys, not a prefix).
            used.extend(
                ckpt.keys()
                    .filter(|k| k.starts_with(Component::Unet.ldm_prefix()))
                    .cloned(),
            );
        } else {
            load_component::<B, _>(&mut sd.unet, &ckpt, &plain, &mut used)?;
        }
        load_component::<B, _>(
            &mut sd.vae,
            &ckpt,
            ldm_candidates(Component::Vae, &unet_cfg),
            &mut used,
        )?;
        load_component::<B, _>(
            &mut sd.text_encoder,
            &ckpt,
            ldm_candidates(Component::Clip, &unet_cfg),
            &mut used,
        )?;
        check_unused(&ckpt, &used)?;
        Ok((sd, choice))
    }

    /// Loads a diffusers folder, building each component from its `config.json`.
    pub fn from_diffusers(dir: &Path, device: &B::Device) -> Result<Self> {
        let unet_dir = dir.join("unet");
        let vae_dir = dir.join("vae");
        let clip_dir = dir.join("text_encoder");
        let arch = SdConfig::from_diffusers_dir(dir)?;
        let mut sd = arch.init::<B>(device);
        let load = |folder: &Path, stem: &str| -> Result<Checkpoint> {
            Checkpoint::open(&weight_file(folder, stem)?)
        };
        let ckpt = load(&unet_dir, "diffusion_pytorch_model")?;
        let mut used = BTreeSet::new();
        load_component::<B, _>(
            &mut sd.unet,
            &ckpt,
            |p| diffusers_keys(Component::Unet, &p.path),
            &mut used,
        )?;
        check_unused(&ckpt, &used)?;
        let ckpt = load(&vae_dir, "diffusion_pytorch_model")?;
        let mut used = BTreeSet::new();
        load_component::<B, _>(
            &mut sd.vae,
            &ckpt,
            |p| diffusers_keys(Component::Vae, &p.path),
            &mut used,
        )?;
        check_unused(&ckpt, &used)?;
        let ckpt = load(&clip_dir, "model")?;
        Self::fill_text_encoder(&mut sd, ckpt)?;
        Ok(sd)
    }

    /// Replaces the text encoder's weights from a transformers `CLIPTextModel` file (keys with
    /// or without the `text_model.` prefix).
    pub fn load_text_encoder_file(&mut self, path: &Path) -> Result<()> {
        Self::fill_text_encoder(self, Checkpoint::open(path)?)
    }

    fn fill_text_encoder(sd: &mut Self, ckpt: Checkpoint) -> Result<()> {
        let mut used = BTreeSet::new();
        load_component::<B, _>(
            &mut sd.text_encoder,
            &ckpt,
            |p| diffusers_keys(Component::Clip, &p.path),
            &mut used,
        )?;
        check_unused(&ckpt, &used)
    }
}

/// The weight file of a diffusers component folder: `<stem>.safetensors`, its `.fp16` variant,
/// or the PyTorch `.bin` of older folders.
pub(crate) fn weight_file(folder: &Path, stem: &str) -> Result<PathBuf> {
    let names = [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
        format!("{stem}.bin"),
        format!("{stem}.fp16.bin"),
    ];
    names
        .iter()
        .map(|n| folder.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ModelError::checkpoint(
                folder,
                format!("no weight file found (looked for {})", names.join(", ")),
            )
        })
}
