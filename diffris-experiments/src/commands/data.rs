//! `diffris data inspect` and `diffris data synth`.

use std::path::PathBuf;

use anyhow::Context;
use diffris_data::inspect::{overlay, split_stats};
use diffris_data::synth::{SynthConfig, write};
use diffris_data::{ClipTokenizer, DatasetFormat};

use crate::util::png::save_png;

/// `diffris data ...`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DataCommand {
    /// Counts per split and category, expression lengths, and a few image + mask overlays.
    Inspect(InspectArgs),
    /// Write a SynthRS dataset (RRSIS-D layout).
    Synth(SynthArgs),
}

/// Arguments of `diffris data inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// rrsisd, refsegrs, risbench or synthrs.
    #[arg(long)]
    pub format: DatasetFormat,
    /// The dataset root.
    #[arg(long)]
    pub root: PathBuf,
    /// Splits to inspect.
    #[arg(long, value_delimiter = ',', default_value = "train,val,test")]
    pub splits: Vec<String>,
    /// Where overlays go (default: `<root>/inspect` is not touched; `./inspect-<format>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overlays written per split.
    #[arg(long, default_value_t = 4)]
    pub overlays: usize,
}

/// Arguments of `diffris data synth`.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Output directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Image side in pixels.
    #[arg(long, default_value_t = 128,
          value_parser = super::bounds::within(super::bounds::SYNTH_SIZE.0, super::bounds::SYNTH_SIZE.1))]
    pub size: usize,
    #[arg(long, default_value_t = 700)]
    pub train: usize,
    #[arg(long, default_value_t = 100)]
    pub val: usize,
    #[arg(long, default_value_t = 200)]
    pub test: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Object size multiplier.
    #[arg(long, default_value_t = 1.0,
          value_parser = super::bounds::within(super::bounds::OBJECT_SCALE.0, super::bounds::OBJECT_SCALE.1))]
    pub object_scale: f32,
}

/// Runs `diffris data ...`.
pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Inspect(a) => inspect(a),
        DataCommand::Synth(a) => {
            let cfg = SynthConfig {
                image_size: a.size,
                train: a.train,
                val: a.val,
                test: a.test,
                seed: a.seed,
                object_scale: a.object_scale,
                ..SynthConfig::default()
            };
            let started = std::time::Instant::now();
            let summary = write(&a.out, &cfg)?;
            println!(
                "wrote SynthRS to {} in {:.1} s: {} images; samples {}",
                a.out.display(),
                started.elapsed().as_secs_f64(),
                summary.images,
                summary
                    .samples
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
    }
}

fn inspect(a: InspectArgs) -> anyhow::Result<()> {
    let tokenizer = ClipTokenizer::embedded()?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("inspect-{}", a.format.name())));
    println!("{} at {}", a.format.name(), a.root.display());
    let mut written = 0;
    let mut failures = Vec::new();
    for split in &a.splits {
        let samples = match a.format.read_split(&a.root, split) {
            Ok(s) => s,
            Err(e) => {
                println!("\n[{split}] not available: {e}");
                failures.push(format!("{split}: {e}"));
                continue;
            }
        };
        let st = split_stats(&samples, &tokenizer)?;
        println!(
            "\n[{split}] {} samples on {} images\n  words per expression: min {} mean {:.1} max {}\n  \
             CLIP tokens per expression: min {} mean {:.1} max {} ({} longer than 75)",
            st.samples,
            st.images,
            st.words.min,
            st.words.mean,
            st.words.max,
            st.tokens.min,
            st.tokens.mean,
            st.tokens.max,
            st.truncated
        );
        println!("  categories:");
        for (c, n) in &st.categories {
            println!("    {c:<24} {n}");
        }
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        for (i, s) in samples.iter().take(a.overlays).enumerate() {
            let (img, mask) = s.load_image_and_mask()?;
            let path = out.join(format!("{split}-{i:03}.png"));
            save_png(&path, overlay(&img, &mask))?;
            println!("  overlay {} : {}", path.display(), s.sentence);
            written += 1;
        }
    }
    // A missing split is normal (RISBench may have no val file); no readable split at all is
    // a wrong root or format.
    anyhow::ensure!(
        failures.len() < a.splits.len(),
        "no split of {} could be read at {}:\n  {}",
        a.format.name(),
        a.root.display(),
        failures.join("\n  ")
    );
    println!("\n{written} overlay(s) in {}", out.display());
    Ok(())
}
