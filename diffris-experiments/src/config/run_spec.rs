//! The crate's central noun: [`RunSpec`], everything one run needs, fully resolved (by a
//! profile, [`crate::config::profile`]), and its file format (`config.ron` in the run's folder,
//! and what a parent process sends a `run-spec` process).

use std::path::{Path, PathBuf};

use diffris_data::DatasetFormat;
use diffris_data::synth::SynthConfig;
use diffris_model::diffris::DiffRisConfig;
use diffris_model::sd::SdConfig;
use diffris_model::weights::UnetWeights;
use serde::{Deserialize, Serialize};

use crate::config::recipe::{Protocol, TrainSpec, check_dir_name, ron_error};

/// The profile a run resolves with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ProfileName {
    Paper,
    Tiny,
}

/// Where the frozen SD weights of a run come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SdSource {
    /// A user's checkpoint (diffusers folder or single file).
    Path(PathBuf),
    /// Seeded random weights of the architecture (tiny profile), written to the cache once.
    Random { seed: u64 },
}

/// Everything one run needs, written to the run directory as `config.ron` before it starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub ablation: String,
    pub variant: String,
    pub label: String,
    pub seed: u64,
    pub profile: ProfileName,
    pub dataset: DatasetFormat,
    pub data_root: PathBuf,
    /// How SynthRS was generated (tiny profile).
    pub synth: Option<SynthConfig>,
    pub train_split: String,
    pub val_split: String,
    pub test_split: String,
    /// The validation split is about N training expressions held out (see
    /// [`crate::inputs::held_out`]); the training split is the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_from_train: Option<usize>,
    pub protocol: Protocol,
    /// The SD version name the recipe asked for.
    pub sd_weights: String,
    /// The UNet set read from a single file holding two (see the recipe's field).
    #[serde(default, skip_serializing_if = "UnetWeights::is_default")]
    pub sd_unet: UnetWeights,
    pub sd_source: SdSource,
    pub sd_arch: SdConfig,
    pub model: DiffRisConfig,
    pub train: TrainSpec,
    /// Use only the first N training samples (quick checks); `None`: all.
    #[serde(default)]
    pub limit_train: Option<usize>,
    /// Use only the first N validation and test samples; `None`: all.
    #[serde(default)]
    pub limit_eval: Option<usize>,
    /// Every value the profile changed, with the reason (the tiny profile's smaller sizes).
    #[serde(default)]
    pub profile_changes: Vec<ProfileChange>,
}

#[cfg(test)]
impl RunSpec {
    /// A paper-profile run on RRSIS-D at `/data` with SD-1.5 weights at `/w`, for tests.
    pub(crate) fn example() -> Self {
        Self {
            ablation: "a".into(),
            variant: "v".into(),
            label: "l".into(),
            seed: 0,
            profile: ProfileName::Paper,
            dataset: DatasetFormat::Rrsisd,
            data_root: "/data".into(),
            synth: None,
            train_split: "train".into(),
            val_split: "val".into(),
            test_split: "test".into(),
            val_from_train: None,
            protocol: Protocol::Lavt,
            sd_weights: "sd15".into(),
            sd_unet: UnetWeights::Ema,
            sd_source: SdSource::Path("/w".into()),
            sd_arch: SdConfig::sd15(),
            model: DiffRisConfig::default(),
            train: TrainSpec::default(),
            limit_train: None,
            limit_eval: None,
            profile_changes: vec![],
        }
    }
}

/// One value a profile set in place of the recipe's (paper-default) value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileChange {
    /// The recipe field, as a variant's `set` names it (`model.adapter.heads`).
    pub field: String,
    /// The recipe's value (the paper's default).
    pub paper: String,
    /// The value the run uses.
    pub value: String,
    pub reason: String,
}

impl RunSpec {
    /// The spec as `config.ron` stores it.
    pub fn to_ron(&self) -> anyhow::Result<String> {
        Ok(ron::ser::to_string_pretty(
            self,
            ron::ser::PrettyConfig::default(),
        )?)
    }

    /// Checks that every number of the spec fits the f32 arithmetic it feeds: the model and the
    /// optimizer compute in f32, so a recipe value beyond f32's largest finite value (about
    /// 3.4e38; RON reads it as an f64) would become an infinity there, and a non-zero value
    /// below its smallest normal one (about 1.2e-38) zero or a denormal. The error names the
    /// field (`train.lr`, `model.loss.class_weights[1]`).
    pub fn check_f32_range(&self) -> anyhow::Result<()> {
        fn walk(v: &serde_json::Value, path: &mut String) -> Result<(), String> {
            match v {
                serde_json::Value::Number(n) => match n.as_f64() {
                    Some(x) if x.abs() > f32::MAX as f64 => Err(format!(
                        "{path}: {x:e} is beyond f32's range (largest finite value {:e}), which \
                         the model and the optimizer compute in",
                        f32::MAX
                    )),
                    // A value f32 cannot tell from zero (below its smallest normal number)
                    // would silently become 0 or lose its digits: `--lr 1e-50` trained at lr 0.
                    Some(x) if x != 0.0 && x.abs() < f32::MIN_POSITIVE as f64 => Err(format!(
                        "{path}: {x:e} is below f32's smallest normal value ({:e}), so the model \
                         and the optimizer, which compute in f32, would read it as (nearly) 0",
                        f32::MIN_POSITIVE
                    )),
                    _ => Ok(()),
                },
                serde_json::Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        walk(item, path)?;
                        path.truncate(len);
                    }
                    Ok(())
                }
                serde_json::Value::Object(fields) => {
                    for (name, field) in fields {
                        let len = path.len();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(name);
                        walk(field, path)?;
                        path.truncate(len);
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        let value = serde_json::to_value(self)?;
        for part in ["model", "train"] {
            let mut path = part.to_string();
            walk(&value[part], &mut path)
                .map_err(|e| anyhow::anyhow!("{}/{}: {e}", self.ablation, self.variant))?;
        }
        Ok(())
    }

    /// Reads a saved spec (`config.ron`, or one sent to a `run-spec` process); `origin` names it
    /// in errors. Its ablation and variant names are checked as [`check_dir_name`] checks them.
    pub fn parse(text: &str, origin: &Path) -> anyhow::Result<Self> {
        let spec: Self = ron::from_str(text).map_err(|e| ron_error(origin, e))?;
        check_dir_name("ablation", &spec.ablation)
            .and_then(|()| check_dir_name("variant", &spec.variant))
            .map_err(|e| anyhow::anyhow!("{}: {e}", origin.display()))?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name a shipped ablation uses passes; nothing that could leave the folder does.
    #[test]
    fn directory_names_cannot_leave_their_folder() {
        for ok in ["cp_adapter", "lr_1e-4", "sd1.5", "a", &"x".repeat(100)] {
            check_dir_name("variant", ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            "a\\b",
            ".hidden",
            "C:",
            "a b",
            "é",
            &"x".repeat(101),
        ] {
            let err = check_dir_name("variant", bad).unwrap_err().to_string();
            assert!(err.contains(&format!("variant `{bad}` must be")), "{err}");
        }
        let spec = RunSpec {
            variant: "../../x".into(),
            ..RunSpec::example()
        };
        let err = RunSpec::parse(&spec.to_ron().unwrap(), Path::new("config.ron"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config.ron: variant `../../x` must be"),
            "{err}"
        );
    }

    /// A recipe number beyond f32's range is named by its field; the paper's values pass.
    #[test]
    fn numbers_beyond_f32_are_refused_by_field() {
        let spec = RunSpec::example();
        spec.check_f32_range().unwrap();
        let mut huge = spec.clone();
        huge.train.lr = 1e300;
        let err = huge.check_f32_range().unwrap_err().to_string();
        assert!(
            err.starts_with("a/v: train.lr: 1e300 is beyond f32's range"),
            "{err}"
        );
        let mut weights = spec.clone();
        weights.model.loss.class_weights[1] = -1e39;
        let err = weights.check_f32_range().unwrap_err().to_string();
        assert!(err.contains("model.loss.class_weights[1]: -1e39"), "{err}");
        let mut tiny = spec.clone();
        tiny.train.lr = 1e-50;
        let err = tiny.check_f32_range().unwrap_err().to_string();
        assert!(
            err.contains("train.lr: 1e-50 is below f32's smallest normal value"),
            "{err}"
        );
        let mut fits = spec;
        fits.model.latent_scale = f32::MAX as f64;
        fits.train.lr = f32::MIN_POSITIVE as f64;
        fits.check_f32_range().unwrap();
    }
}
