//! Ablation files (RON): a base recipe, named variants that replace parts of it, and the paper's
//! numbers for each row. Plain serde with `deny_unknown_fields` everywhere, so a typo is an error
//! with its line and column, never a silent baseline run.
//!
//! A variant replaces whole sub-configs: `adapter: (enabled: false)` means the paper's adapter
//! with `enabled` switched off (unnamed fields take the paper's defaults, not the base file's).
//! Optional fields are written without `Some(...)` (RON's `implicit_some` is on).

use std::path::{Path, PathBuf};

use anyhow::Context;
use diffris_data::DatasetFormat;
use diffris_model::adapter::CpAdapterConfig;
use diffris_model::decoder::DecoderConfig;
use diffris_model::decoder::loss::LossConfig;
use serde::{Deserialize, Serialize};

use crate::metrics::Protocol;

/// The file format version this build reads.
pub const ABLATION_VERSION: u32 = 1;

/// The model part of a recipe (the frozen SD architecture comes from the profile).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSpec {
    pub adapter: CpAdapterConfig,
    pub decoder: DecoderConfig,
    pub loss: LossConfig,
    pub latent_scale: f64,
    pub timestep: f64,
    pub cross_attention_maps: bool,
}

impl Default for ModelSpec {
    fn default() -> Self {
        let d = diffris_model::diffris::DiffRisConfig::default();
        Self {
            adapter: d.adapter,
            decoder: d.decoder,
            loss: d.loss,
            latent_scale: d.latent_scale,
            timestep: d.timestep,
            cross_attention_maps: d.cross_attention_maps,
        }
    }
}

/// Optimisation settings (paper 4.1.3; the learning rate is lost from the paper's text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Polynomial decay power of the learning rate over all iterations.
    pub lr_power: f64,
    /// Validation metric that picks the checkpoint evaluated on test.
    pub select_by: SelectBy,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            epochs: 40,
            batch_size: 32,
            lr: 1e-4,
            weight_decay: 0.01,
            lr_power: 0.9,
            select_by: SelectBy::Miou,
        }
    }
}

/// The validation metric used for best-checkpoint selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    Miou,
    Oiou,
}

/// The recipe every variant of a file starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecipeSpec {
    pub dataset: DatasetFormat,
    /// Split names used for training, model selection and the reported numbers.
    pub train_split: String,
    pub val_split: String,
    pub test_split: String,
    /// Which SD weights (`sd11`, `sd12`, `sd14`, `sd15`): paths come from the profile's setup.
    pub sd_weights: String,
    pub protocol: Protocol,
    pub model: ModelSpec,
    pub train: TrainSpec,
}

impl Default for RecipeSpec {
    fn default() -> Self {
        Self {
            dataset: DatasetFormat::Rrsisd,
            train_split: "train".into(),
            val_split: "val".into(),
            test_split: "test".into(),
            sd_weights: "sd15".into(),
            protocol: Protocol::Lavt,
            model: ModelSpec::default(),
            train: TrainSpec::default(),
        }
    }
}

/// The paper's numbers for one row (percent); absent ones are not in the paper's table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperNumbers {
    #[serde(default)]
    pub oiou: Option<f64>,
    #[serde(default)]
    pub miou: Option<f64>,
    /// Pr@0.5 .. Pr@0.9 in order; `None` where the paper omits a threshold.
    #[serde(default)]
    pub precision: Vec<Option<f64>>,
}

/// One row of an ablation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short identifier (directory name).
    pub name: String,
    /// Row label as the paper prints it.
    pub label: String,
    #[serde(default)]
    pub adapter: Option<CpAdapterConfig>,
    #[serde(default)]
    pub decoder: Option<DecoderConfig>,
    #[serde(default)]
    pub loss: Option<LossConfig>,
    #[serde(default)]
    pub sd_weights: Option<String>,
    #[serde(default)]
    pub dataset: Option<DatasetFormat>,
    /// The paper's numbers on the test split (the reported one).
    #[serde(default)]
    pub paper: PaperNumbers,
    /// The paper's numbers on the validation split, for tables that show both.
    #[serde(default)]
    pub paper_val: PaperNumbers,
}

/// A metric column of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    Pr50,
    Pr60,
    Pr70,
    Pr80,
    Pr90,
    Oiou,
    Miou,
}

impl Column {
    pub fn header(self) -> &'static str {
        match self {
            Self::Pr50 => "Pr@0.5",
            Self::Pr60 => "Pr@0.6",
            Self::Pr70 => "Pr@0.7",
            Self::Pr80 => "Pr@0.8",
            Self::Pr90 => "Pr@0.9",
            Self::Oiou => "oIoU",
            Self::Miou => "mIoU",
        }
    }

    /// The value of this column in `m`.
    pub fn of(self, m: &crate::metrics::Metrics) -> f64 {
        match self {
            Self::Pr50 => m.precision[0],
            Self::Pr60 => m.precision[1],
            Self::Pr70 => m.precision[2],
            Self::Pr80 => m.precision[3],
            Self::Pr90 => m.precision[4],
            Self::Oiou => m.oiou,
            Self::Miou => m.miou,
        }
    }

    /// The paper's value of this column.
    pub fn paper(self, p: &PaperNumbers) -> Option<f64> {
        match self {
            Self::Oiou => p.oiou,
            Self::Miou => p.miou,
            pr => {
                let k = [Self::Pr50, Self::Pr60, Self::Pr70, Self::Pr80, Self::Pr90]
                    .iter()
                    .position(|c| *c == pr)
                    .expect("precision column");
                p.precision.get(k).copied().flatten()
            }
        }
    }
}

/// The kind of figure an ablation also gets besides its bar chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    /// Only the bar chart.
    Bars,
    /// A line over the variants in order (Fig. 8: SD versions).
    Line,
}

/// An ablation file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblationFile {
    pub version: u32,
    pub name: String,
    /// Caption of the regenerated table.
    pub title: String,
    /// Note printed under the table (e.g. the header swap correction).
    #[serde(default)]
    pub note: Option<String>,
    pub columns: Vec<Column>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default = "default_figure")]
    pub figure: Figure,
    /// Show validation-split columns beside the test ones (Tables 1-3).
    #[serde(default)]
    pub report_val: bool,
    #[serde(default)]
    pub base: RecipeSpec,
    pub variants: Vec<Variant>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

fn default_figure() -> Figure {
    Figure::Bars
}

/// A RON parse error as `file:line:column: message`.
pub fn ron_error(path: &Path, e: ron::error::SpannedError) -> anyhow::Error {
    anyhow::anyhow!(
        "{}:{}:{}: {}",
        path.display(),
        e.span.start.line,
        e.span.start.col,
        e.code
    )
}

impl AblationFile {
    /// Parses an ablation file; errors carry `file:line:column`.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let options = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
        let file: Self = options.from_str(text).map_err(|e| ron_error(path, e))?;
        if file.version != ABLATION_VERSION {
            anyhow::bail!(
                "{}: version {} is not supported (this build reads version {ABLATION_VERSION})",
                path.display(),
                file.version
            );
        }
        if file.variants.is_empty() {
            anyhow::bail!("{}: no variants", path.display());
        }
        let mut names = std::collections::BTreeSet::new();
        for v in &file.variants {
            if !names.insert(&v.name) {
                anyhow::bail!(
                    "{}: variant name `{}` is used twice",
                    path.display(),
                    v.name
                );
            }
            if v.name.is_empty()
                || !v
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                anyhow::bail!(
                    "{}: variant name `{}` must be letters, digits, `_` or `-` (it names a directory)",
                    path.display(),
                    v.name
                );
            }
        }
        Ok(file)
    }

    /// Reads and parses an ablation file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// The base recipe with the variant's replacements.
    pub fn recipe(&self, variant: &Variant) -> RecipeSpec {
        let mut r = self.base.clone();
        if let Some(a) = &variant.adapter {
            r.model.adapter = a.clone();
        }
        if let Some(d) = &variant.decoder {
            r.model.decoder = d.clone();
        }
        if let Some(l) = &variant.loss {
            r.model.loss = l.clone();
        }
        if let Some(w) = &variant.sd_weights {
            r.sd_weights = w.clone();
        }
        if let Some(d) = variant.dataset {
            r.dataset = d;
        }
        r
    }
}

/// Finds an ablation by name (`cp_adapter`) or path.
pub fn locate(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let direct = PathBuf::from(name);
    if direct.extension().is_some_and(|e| e == "ron") && direct.is_file() {
        return Ok(direct);
    }
    let path = dir.join(format!("{name}.ron"));
    if path.is_file() {
        return Ok(path);
    }
    let available: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_suffix(".ron")
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    anyhow::bail!(
        "no ablation `{name}` in {} (available: {})",
        dir.display(),
        if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"(
        version: 1,
        name: "t",
        title: "T",
        columns: [miou, oiou],
        variants: [
            (name: "a", label: "A", paper: (oiou: 1.0, miou: 2.0)),
            (name: "b", label: "B", adapter: (enabled: false)),
        ],
    )"#;

    #[test]
    fn parses_and_applies_variant_replacements() {
        let f = AblationFile::parse(MINIMAL, Path::new("t.ron")).unwrap();
        assert_eq!(f.seeds, vec![0]);
        let a = f.recipe(&f.variants[0]);
        let b = f.recipe(&f.variants[1]);
        assert!(a.model.adapter.enabled);
        assert!(!b.model.adapter.enabled);
        // Unnamed adapter fields take the paper's defaults.
        assert_eq!(b.model.adapter.rank, CpAdapterConfig::default().rank);
    }

    #[test]
    fn a_typo_is_an_error_with_line_and_column() {
        let text = MINIMAL.replace("adapter: (enabled: false)", "adapter: (enabeld: false)");
        let err = AblationFile::parse(&text, Path::new("t.ron"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.ron:8:"), "{err}");
        assert!(err.contains("enabeld"), "{err}");
    }

    #[test]
    fn a_wrong_version_is_an_error() {
        let text = MINIMAL.replace("version: 1", "version: 7");
        let err = AblationFile::parse(&text, Path::new("t.ron"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 7"), "{err}");
    }
}
