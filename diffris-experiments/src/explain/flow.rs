//! `diffris explain` from its arguments to its files: the run reloaded with an autodiff copy of
//! its model, the query (an image of the user's with a text, or a sample of the run's dataset),
//! the explanation computed ([`super::compute`]), drawn and written ([`super::render`]), and a
//! summary printed.

use burn::backend::Autodiff;
use burn::module::Module;
use diffris_data::batch::prepare;
use diffris_data::sample::open_image;

use std::path::PathBuf;

use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::explain::compute::{Query, Settings, explain};
use crate::explain::render::{attribution_csv, write_all};
use crate::inputs::query::query_item;
use crate::records::reload::load_run_with;
use crate::util::atomic_file::write_atomic;
use crate::util::cache::default_cache;

/// What to explain, and how (the arguments of `diffris explain`).
pub struct Request {
    /// A finished run directory.
    pub run: PathBuf,
    /// An image of the user's (with `text`), or a sample of the run's dataset (`split` and
    /// `index`).
    pub image: Option<PathBuf>,
    pub text: Option<String>,
    pub split: Option<String>,
    pub index: Option<usize>,
    /// The output directory.
    pub out: PathBuf,
    /// Points on the integrated-gradient path.
    pub steps: usize,
    /// Samples per pass (`None`: the run's pass size, at most [`MAX_DEFAULT_BATCH`]).
    pub batch: Option<usize>,
    /// Width of one panel in pixels.
    pub panel: u32,
    pub cache: Option<PathBuf>,
}

/// The largest default `--batch`: the paper profile's pass is 32 samples.
const MAX_DEFAULT_BATCH: usize = 4;

struct Explain(Request);

impl BackendJob for Explain {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, _target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        crate::util::atomic_file::check_writable_dir(&a.out)?;
        let cache = a.cache.clone().unwrap_or_else(default_cache);
        // Gradients to the text states need autodiff; an inference copy of the model (no
        // dropout, no parameter gradients) keeps everything else as inference computes it.
        let run = load_run_with::<Autodiff<B>>(&a.run, &cache, &device, |m| {
            m.adapter.dropout = 0.0;
            Ok(())
        })?;
        let model = run.model.no_grad();
        let (h, w) = run.spec.model.image_size;
        let (query, image) = match (&a.image, &a.text, &a.split, a.index) {
            (Some(path), Some(text), _, _) => {
                let img = open_image(path)?.into_rgb8();
                let item = query_item(&img, text, &run.tokenizer, (h, w))?;
                let query = Query {
                    item,
                    text: text.clone(),
                    source: path.display().to_string(),
                };
                (query, img)
            }
            (_, _, Some(split), Some(index)) => {
                let samples = crate::inputs::held_out::read_split(&run.spec, split)?;
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

/// Explains the query of `request` on `device`: writes the files and prints the summary.
pub fn run(device: DeviceSpec, request: Request) -> anyhow::Result<()> {
    dispatch(device, Explain(request))?
}
