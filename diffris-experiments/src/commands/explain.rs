//! `diffris explain --run DIR (--image X --text "..." | --split S --index N) --out DIR`: what a
//! trained model reads from one image and expression (see [`crate::explain`]).

use std::path::PathBuf;

use anyhow::Context;
use burn::backend::Autodiff;
use burn::module::Module;
use diffris_data::batch::{prepare, prepare_query};
use diffris_data::sample::open_image;
use diffris_model::ops::SdBackend;

use crate::device::backend::{BackendJob, DeviceSpec, RunTarget, dispatch};
use crate::explain::compute::{Query, Settings, explain};
use crate::explain::render::write_all;
use crate::inputs::frozen::check_vocab;
use crate::records::reload::load_run_with;
use crate::util::atomic_file::write_atomic;
use crate::util::cache::default_cache;

/// Arguments of `diffris explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// A finished run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// An image to explain (with --text).
    #[arg(long, requires = "text", conflicts_with_all = ["split", "index"])]
    pub image: Option<PathBuf>,
    /// The referring expression (with --image).
    #[arg(long, requires = "image")]
    pub text: Option<String>,
    /// A split of the run's dataset (with --index): its sample's image, expression and ground
    /// truth.
    #[arg(long, requires = "index")]
    pub split: Option<String>,
    /// The sample's index in --split.
    #[arg(long, requires = "split")]
    pub index: Option<usize>,
    /// Output directory (gets explain.png, explain.json, attributions.csv and the panels).
    #[arg(long)]
    pub out: PathBuf,
    /// Points on the integrated-gradient path (midpoint rule).
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Samples per pass (path points, deleted words); default: the run's pass size, at most
    /// 4 (each path point holds a training pass's activations: about 3.4 GiB at 512 px on the
    /// CPU backend).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Width of one panel in pixels.
    #[arg(long, default_value_t = 128,
          value_parser = super::bounds::within(super::bounds::PANEL.0, super::bounds::PANEL.1))]
    pub panel: u32,
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// The largest default `--batch`: the paper profile's pass is 32 samples.
const MAX_DEFAULT_BATCH: usize = 4;

struct Explain(ExplainArgs);

impl BackendJob for Explain {
    type Output = anyhow::Result<()>;

    fn run<B: SdBackend>(self, device: B::Device, _target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        crate::util::atomic_file::check_writable_dir(&a.out)?;
        let cache = a.cache.clone().unwrap_or_else(default_cache);
        // Gradients to the text states need autodiff; an inference copy of the model (no
        // dropout, no parameter gradients) keeps everything else as inference computes it.
        let run =
            load_run_with::<Autodiff<B>>(&a.run, &cache, &device, |m| m.adapter.dropout = 0.0)?;
        let model = run.model.no_grad();
        let (h, w) = run.spec.model.image_size;
        let (query, image) = match (&a.image, &a.text, &a.split, a.index) {
            (Some(path), Some(text), _, _) => {
                let img = open_image(path)?.into_rgb8();
                let item = prepare_query(&img, text, &run.tokenizer, h, w)?;
                if let Some(w) = item.truncation_warning(text) {
                    eprintln!("{w}");
                }
                let query = Query {
                    item,
                    text: text.clone(),
                    source: path.display().to_string(),
                };
                (query, img)
            }
            (_, _, Some(split), Some(index)) => {
                let samples = run
                    .spec
                    .dataset
                    .read_split(&run.spec.data_root, split)
                    .with_context(|| {
                        format!(
                            "reading split `{split}` of {}",
                            run.spec.data_root.display()
                        )
                    })?;
                let sample = samples.get(index).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--index {index}: split `{split}` has {} samples (0 to {})",
                        samples.len(),
                        samples.len().saturating_sub(1)
                    )
                })?;
                let item = prepare(sample, index, &run.tokenizer, h, w)?;
                let query = Query {
                    item,
                    text: sample.sentence.clone(),
                    source: format!("{split} sample {index} ({})", sample.image.display()),
                };
                (query, sample.load_image()?)
            }
            _ => anyhow::bail!(
                "give an input: --image FILE --text \"...\", or --split NAME --index N"
            ),
        };
        check_vocab(&query.item.ids, model.text_encoder.config().vocab_size)?;
        let settings = Settings {
            steps: a.steps,
            batch: a
                .batch
                .unwrap_or_else(|| run.spec.train.pass_size().min(MAX_DEFAULT_BATCH)),
        };
        let label = format!(
            "{}/{} seed {}",
            run.spec.ablation, run.spec.variant, run.spec.seed
        );
        let e = explain(&model, &run.tokenizer, &query, settings, label, &device)?;
        let network = image::imageops::resize(
            &image,
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        );
        let mut files = write_all(&e, &network, a.panel, &a.out)?;
        let json = a.out.join("explain.json");
        write_atomic(&json, serde_json::to_string_pretty(&e)?.as_bytes())?;
        files.push(json);
        let csv = a.out.join("attributions.csv");
        write_atomic(&csv, attribution_csv(&e).as_bytes())?;
        files.push(csv);

        println!("\"{}\" ({}, {})", e.expression, e.run, e.decoder);
        println!(
            "prediction: {} foreground pixels of {}{}",
            e.foreground_pixels,
            h * w,
            e.ground_truth_iou
                .map(|iou| format!(", IoU {:.2} against the ground truth", 100.0 * iou))
                .unwrap_or_default()
        );
        println!(
            "{:<16} {:>12} {:>13}  attention per level (adapted / CLIP)",
            "word", "attribution", "deletion IoU"
        );
        for word in &e.words {
            let att: Vec<String> = word
                .attention_adapted
                .iter()
                .zip(&word.attention_clip)
                .map(|(a, c)| format!("{a:.3}/{c:.3}"))
                .collect();
            println!(
                "{:<16} {:>12.4} {:>13.2}  {}",
                word.word,
                word.attribution,
                100.0 * word.deletion_iou,
                att.join("  ")
            );
        }
        println!(
            "integrated gradients: sum {:.4}, F(input) - F(baseline) = {:.4} (completeness gap \
             {:.2}%, {} steps)",
            e.attribution.total,
            e.attribution.value - e.attribution.baseline_value,
            100.0 * e.attribution.completeness_gap,
            e.attribution.steps
        );
        for s in &e.skipped {
            println!("skipped: {s}");
        }
        for n in &e.notes {
            println!("note: {n}");
        }
        println!(
            "wrote {} files to {} (contact sheet: {})",
            files.len(),
            a.out.display(),
            a.out.join("explain.png").display()
        );
        Ok(())
    }
}

/// `word,first_token,end_token,attribution,deletion_iou,deleted_text`, one line a word.
pub fn attribution_csv(e: &crate::explain::Explanation) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut out =
        String::from("word,first_token,end_token,attribution,deletion_iou,deleted_text\n");
    for w in &e.words {
        out.push_str(&format!(
            "{},{},{},{:.6},{:.6},{}\n",
            quote(&w.word),
            w.tokens[0],
            w.tokens[1],
            w.attribution,
            w.deletion_iou,
            quote(&w.deleted_text)
        ));
    }
    out
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: ExplainArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.steps > 0, "--steps must be at least 1");
    anyhow::ensure!(args.batch != Some(0), "--batch must be at least 1");
    anyhow::ensure!(args.panel >= 16, "--panel must be at least 16 pixels");
    // clap ties --image to --text and --split to --index; one of the two pairs is needed.
    anyhow::ensure!(
        args.image.is_some() || args.split.is_some(),
        "give an input: --image FILE --text \"...\", or --split NAME --index N"
    );
    if let Some(text) = &args.text {
        anyhow::ensure!(
            !text.trim().is_empty(),
            "--text is empty: give the expression that refers to the object"
        );
    }
    dispatch(device, Explain(args))?
}
