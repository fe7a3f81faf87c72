//! Ablation files (RON): a base recipe, named variants that override any of its fields, and the
//! paper's numbers for each row. Plain serde with `deny_unknown_fields` everywhere, so a typo is
//! an error with its line and column, never a silent baseline run.
//!
//! A variant writes the fields it changes under `set:`, in the recipe's own layout:
//! `set: (model: (adapter: (enabled: false), timestep: 100.0), train: (lr: 0.001))`. They are
//! merged over the base field by field ([`merge`]): whatever the variant does not write keeps
//! the base's value, and the base's unwritten fields take the paper's defaults. Optional fields
//! are written without `Some(...)` (RON's `implicit_some` is on).

pub mod merge;
pub mod set;

use std::path::{Path, PathBuf};

use anyhow::Context;
use diffris_data::DatasetFormat;
use diffris_model::diffris::DiffRisConfig;
use diffris_model::error::{ConfigError, ensure};
use diffris_model::weights::UnetWeights;
use serde::{Deserialize, Serialize};

use merge::Node;

/// Where a prediction is compared with its ground truth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// LAVT/RMSIN (the paper's tables): at the network input size, against the ground truth
    /// resized there with nearest neighbour.
    #[default]
    Lavt,
    /// CGFormer: at the ground truth's original size; the foreground probability is resized
    /// there bilinearly before thresholding.
    Cgformer,
}

impl Protocol {
    /// The name the CLI uses (`lavt`, `cgformer`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Lavt => "lavt",
            Self::Cgformer => "cgformer",
        }
    }

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Lavt => "LAVT protocol (network resolution)",
            Self::Cgformer => "CGFormer protocol (original resolution)",
        }
    }
}

/// The file format version this build reads (version 1 wrote a variant's `adapter`, `decoder`,
/// `loss`, `sd_weights` and `dataset` beside its name; version 2 writes any field under `set`).
pub const ABLATION_VERSION: u32 = 2;

/// Which parameters weight decay applies to (`train.weight_decay_scope`; the optimizer is
/// `crate::training::weight_decay`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayScope {
    /// Every parameter but norms, biases, learnt tokens, embeddings, prompts, temperatures and
    /// scales (the lineage's; the default).
    #[default]
    Lineage,
    /// Every parameter (Burn's AdamW as it is).
    All,
}

/// Optimisation settings (paper 4.1.3). Where the paper is silent (the learning rate is lost from
/// its text; the checkpoint selection is not stated) the defaults are VPD's `refer/` recipe:
/// lr 5e-5, best validation oIoU (docs/DESIGN.md, section 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    pub epochs: usize,
    /// Samples per optimizer step.
    pub batch_size: usize,
    /// Samples per forward/backward pass: a batch is computed as `ceil(batch_size / micro_batch)`
    /// passes whose gradients are summed before the step (gradient accumulation). `None`: the
    /// whole batch in one pass. Evaluation and encoding run in batches of this size too.
    pub micro_batch: Option<usize>,
    pub lr: f64,
    pub weight_decay: f64,
    /// Which parameters the weight decay applies to: `lineage` (the default: not norms,
    /// biases, learnt tokens, embeddings, prompts, temperatures or scales, as LAVT, VPD and
    /// CARIS) or `all`.
    pub weight_decay_scope: DecayScope,
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
            micro_batch: None,
            lr: 5e-5,
            weight_decay: 0.01,
            weight_decay_scope: DecayScope::Lineage,
            lr_power: 0.9,
            select_by: SelectBy::Oiou,
        }
    }
}

impl TrainSpec {
    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(self.epochs > 0, "epochs", || "must be at least 1".into())?;
        ensure(self.batch_size > 0, "batch_size", || {
            "must be at least 1".into()
        })?;
        if let Some(m) = self.micro_batch {
            ensure(m > 0 && m <= self.batch_size, "micro_batch", || {
                format!("{m} is not between 1 and batch_size ({})", self.batch_size)
            })?;
        }
        ensure(self.lr.is_finite() && self.lr > 0.0, "lr", || {
            format!("{} is not a positive learning rate", self.lr)
        })?;
        ensure(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "weight_decay",
            || format!("{} is not a number >= 0", self.weight_decay),
        )?;
        ensure(
            self.lr_power.is_finite() && self.lr_power >= 0.0,
            "lr_power",
            || format!("{} is not a number >= 0", self.lr_power),
        )
    }
}

impl TrainSpec {
    /// Samples per pass.
    pub fn pass_size(&self) -> usize {
        self.micro_batch
            .unwrap_or(self.batch_size)
            .clamp(1, self.batch_size.max(1))
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
    /// Hold out about N expressions of the training split as the validation split, for datasets
    /// published without one (RISBench's public download): whole images, chosen by a fixed
    /// hash of their paths, so every run of a table validates on the same held-out set and no
    /// image is seen by both. `None`: read `val_split`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_from_train: Option<usize>,
    /// Which SD weights (`sd11`, `sd12`, `sd14`, `sd15`): paths come from the profile's setup.
    pub sd_weights: String,
    /// Which UNet a single-file checkpoint holding two is read for: `ema` (default, as
    /// released pipelines run it) or `non_ema` (the trained weights).
    #[serde(skip_serializing_if = "UnetWeights::is_default")]
    pub sd_unet: UnetWeights,
    pub protocol: Protocol,
    /// The whole DiffRIS configuration (input size, latent scale, timestep, adapter, decoder,
    /// loss); the frozen SD architecture comes from the profile.
    pub model: DiffRisConfig,
    pub train: TrainSpec,
}

impl Default for RecipeSpec {
    fn default() -> Self {
        Self {
            dataset: DatasetFormat::Rrsisd,
            train_split: "train".into(),
            val_split: "val".into(),
            test_split: "test".into(),
            val_from_train: None,
            sd_weights: "sd15".into(),
            sd_unet: UnetWeights::Ema,
            protocol: Protocol::Lavt,
            model: DiffRisConfig::default(),
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

/// The backbones of a row, as Tables 1-3 print them (`visual: "Swin-B", text: "BERT"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encoders {
    pub visual: String,
    pub text: String,
}

/// A method the paper compares against, with the numbers the paper reports for it: shown in
/// the table beside ours, never run by diffris.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reported {
    /// The method as the paper names it, with its reference number (`"RRN [39]"`).
    pub label: String,
    #[serde(default)]
    pub encoders: Option<Encoders>,
    /// The paper's numbers on the test split.
    #[serde(default)]
    pub paper: PaperNumbers,
    /// The paper's numbers on the validation split.
    #[serde(default)]
    pub paper_val: PaperNumbers,
}

/// One row of an ablation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Short identifier (directory name).
    pub name: String,
    /// Row label as the paper prints it.
    pub label: String,
    /// The row's backbones, for tables that print them.
    #[serde(default)]
    pub encoders: Option<Encoders>,
    /// The recipe fields this variant changes. Parsed as a whole recipe only to check names and
    /// types where they are written (unwritten fields read as the paper's defaults here); the
    /// variant's recipe is [`Variant::recipe`].
    #[serde(default)]
    pub set: Option<RecipeSpec>,
    /// The paper's numbers on the test split (the reported one).
    #[serde(default)]
    pub paper: PaperNumbers,
    /// The paper's numbers on the validation split, for tables that show both.
    #[serde(default)]
    pub paper_val: PaperNumbers,
    /// The base recipe with `set` merged over it (filled in by [`AblationFile::parse`]).
    #[serde(skip)]
    pub recipe: RecipeSpec,
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
    /// The other methods the paper's table compares (reported numbers only), listed before
    /// ours as the paper does.
    #[serde(default)]
    pub reported: Vec<Reported>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

fn default_figure() -> Figure {
    Figure::Bars
}

/// A RON parse error as `file:line:column: message`.
/// The text of a RON file a user writes (an ablation file, a setup), without the byte-order
/// mark some Windows editors put first: RON would read it as a character before the opening
/// parenthesis.
pub fn read_ron_text(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

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
    /// Every row's label with the paper's test and validation numbers: the variants, then the
    /// reported rows.
    pub fn paper_rows(&self) -> impl Iterator<Item = (&str, &PaperNumbers, &PaperNumbers)> {
        let variants = self
            .variants
            .iter()
            .map(|v| (v.label.as_str(), &v.paper, &v.paper_val));
        let reported = self
            .reported
            .iter()
            .map(|r| (r.label.as_str(), &r.paper, &r.paper_val));
        variants.chain(reported)
    }

    /// Parses an ablation file; errors carry `file:line:column`.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let version: Versioned = ron_options()
            .from_str(text)
            .map_err(|e| ron_error(path, e))?;
        if version.version != ABLATION_VERSION {
            anyhow::bail!(
                "{}: version {} is not supported (this build reads version {ABLATION_VERSION}: a \
                 variant writes the recipe fields it changes under `set: (..)`, e.g. `set: (model: \
                 (adapter: (enabled: false)))` where version 1 wrote `adapter: (enabled: false)`)",
                path.display(),
                version.version
            );
        }
        let mut file: Self = ron_options()
            .from_str(text)
            .map_err(|e| ron_error(path, e))?;
        if file.variants.is_empty() {
            anyhow::bail!("{}: no variants", path.display());
        }
        // A table of no columns, or of no seeds, would be written empty with success; a seed
        // listed twice would be counted twice in its rows' means.
        if file.columns.is_empty() {
            anyhow::bail!(
                "{}: `columns` is empty (name at least one metric, e.g. [miou, oiou])",
                path.display()
            );
        }
        if file.seeds.is_empty() {
            anyhow::bail!(
                "{}: `seeds` is empty (leave it out for seed 0)",
                path.display()
            );
        }
        let mut seeds = std::collections::BTreeSet::new();
        if let Some(s) = file.seeds.iter().find(|s| !seeds.insert(**s)) {
            anyhow::bail!("{}: seed {s} is listed twice in `seeds`", path.display());
        }
        if let Some(v) = file.variants.iter().find(|v| v.label.trim().is_empty()) {
            anyhow::bail!(
                "{}: variant `{}` has an empty `label` (its row's name in the table)",
                path.display(),
                v.name
            );
        }
        for (label, test, val) in file.paper_rows() {
            for (field, p) in [("paper", test), ("paper_val", val)] {
                if p.precision.len() > 5 {
                    anyhow::bail!(
                        "{}: row `{label}`: `{field}` has {} precision values (Pr@0.5 .. Pr@0.9 \
                         are 5)",
                        path.display(),
                        p.precision.len()
                    );
                }
            }
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
            check_dir_name("variant name", &v.name)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        check_dir_name("ablation name", &file.name)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let tree = Node::parse(text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
        let base = Node::parse(&ron::to_string(&file.base)?)
            .map_err(|e| anyhow::anyhow!("the base recipe of {} as RON: {e}", path.display()))?;
        for (variant, node) in file
            .variants
            .iter_mut()
            .zip(tree.field("variants").map_or(&[][..], Node::items))
        {
            let merged = match node.field("set") {
                Some(set) => base.clone().merged(set),
                None => base.clone(),
            };
            variant.recipe = ron_options().from_str(&merged.to_ron()).map_err(|e| {
                anyhow::anyhow!(
                    "{}: variant `{}`: the base recipe with its `set` merged over it: {}",
                    path.display(),
                    variant.name,
                    e.code
                )
            })?;
        }
        Ok(file)
    }

    /// Reads and parses an ablation file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::parse(&read_ron_text(path)?, path)
    }
}

/// Just the version of an ablation file, read before the rest (whose layout depends on it).
#[derive(Deserialize)]
struct Versioned {
    version: u32,
}

/// RON as ablation files are read: optional values written without `Some(..)`.
fn ron_options() -> ron::Options {
    ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME)
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

/// Checks a name that becomes one folder of a path (an ablation's or a variant's): ASCII letters,
/// digits, `_`, `-` and `.`, not starting with `.` (so never `.` or `..`), at most 100 bytes. No
/// separator, drive or parent step can then take a path built from it out of `--results`.
pub fn check_dir_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    anyhow::ensure!(
        ok,
        "{what} `{name}` must be 1 to 100 letters, digits, `_`, `-` or `.`, not starting with `.` \
         (it names a directory)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use diffris_model::adapter::CpAdapterConfig;
    use diffris_model::decoder::DecoderConfig;

    const MINIMAL: &str = r#"(
        version: 2,
        name: "t",
        title: "T",
        columns: [miou, oiou],
        base: (model: (adapter: (rank: 4)), train: (epochs: 3)),
        variants: [
            (name: "a", label: "A", paper: (oiou: 1.0, miou: 2.0)),
            (name: "b", label: "B", set: (model: (adapter: (enabled: false)))),
            (name: "c", label: "C", set: (model: (timestep: 250.0, decoder: lmp((hidden: 64))), train: (lr: 0.003), test_split: "val")),
        ],
    )"#;

    #[test]
    fn a_variant_overrides_any_field_and_keeps_the_rest_of_the_base() {
        let f = AblationFile::parse(MINIMAL, Path::new("t.ron")).unwrap();
        assert_eq!(f.seeds, vec![0]);
        let [a, b, c] = [0, 1, 2].map(|i| &f.variants[i].recipe);
        assert_eq!(*a, f.base);
        assert!(a.model.adapter.enabled);
        assert!(!b.model.adapter.enabled);
        // Fields the variant does not write keep the base's values, not the paper's defaults.
        assert_eq!(b.model.adapter.rank, 4);
        assert_ne!(CpAdapterConfig::default().rank, 4);
        assert_eq!(b.train.epochs, 3);
        assert_eq!(c.model.timestep, 250.0);
        assert_eq!(c.train.lr, 0.003);
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.test_split, "val");
        assert_eq!(c.model.adapter.rank, 4);
        let DecoderConfig::Lmp(lmp) = &c.model.decoder else {
            panic!("decoder {:?}", c.model.decoder);
        };
        assert_eq!(lmp.hidden, 64);
        // Everything else is the base recipe.
        let mut expected = f.base.clone();
        expected.model.timestep = 250.0;
        expected.model.decoder = c.model.decoder.clone();
        expected.train.lr = 0.003;
        expected.test_split = "val".into();
        assert_eq!(*c, expected);
    }

    #[test]
    fn a_typo_is_an_error_with_line_and_column() {
        let text = MINIMAL.replace("adapter: (enabled: false)", "adapter: (enabeld: false)");
        let err = AblationFile::parse(&text, Path::new("t.ron"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.ron:9:"), "{err}");
        assert!(err.contains("enabeld"), "{err}");
        let text = MINIMAL.replace("train: (lr: 0.003)", "train: (lr: \"fast\")");
        let err = AblationFile::parse(&text, Path::new("t.ron"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.ron:10:"), "{err}");
    }

    #[test]
    fn a_wrong_version_is_an_error_that_says_what_changed() {
        let text = MINIMAL.replace("version: 2", "version: 1");
        let err = AblationFile::parse(&text, Path::new("t.ron"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("version 1"), "{err}");
        assert!(err.contains("set:"), "{err}");
    }

    #[test]
    fn held_out_validation_and_the_unet_set_are_recipe_fields_written_only_when_set() {
        let text = r#"(version: 2, name: "n", title: "T", columns: [miou],
            base: (dataset: risbench, val_from_train: 500, sd_unet: non_ema),
            variants: [(name: "a", label: "A"), (name: "b", label: "B", set: (sd_unet: ema))])"#;
        let f = AblationFile::parse(text, Path::new("n.ron")).unwrap();
        assert_eq!(f.variants[0].recipe.val_from_train, Some(500));
        assert_eq!(f.variants[0].recipe.sd_unet, UnetWeights::NonEma);
        assert_eq!(f.variants[1].recipe.sd_unet, UnetWeights::Ema);
        // Defaults are not written, so configs written before these fields read the same.
        let plain = ron::to_string(&RecipeSpec::default()).unwrap();
        assert!(
            !plain.contains("val_from_train") && !plain.contains("sd_unet"),
            "{plain}"
        );
        let set = ron::to_string(&f.variants[0].recipe).unwrap();
        assert!(
            set.contains("val_from_train:Some(500)") && set.contains("sd_unet:non_ema"),
            "{set}"
        );
    }
}
