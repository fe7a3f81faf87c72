//! `diffris figures --run DIR [--run DIR2 ...] --split S`: the paper's qualitative figures
//! (Figs. 5-7): for the best, the median and the worst sample of the first run (by its IoU),
//! a row of image, ground truth and each run's prediction with its IoU, as one PNG.

use std::path::PathBuf;

use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::eval::evaluate::score_samples;
use crate::eval::metrics::Protocol;
use crate::records::reload::load_run;
use crate::report::figures::{Predicted, draw, pick_rows};
use crate::runner::predict::predict_split;
use crate::util::cache::default_cache;

/// Arguments of `diffris figures`.
#[derive(Debug, Clone, clap::Args)]
pub struct FiguresArgs {
    /// A finished run directory; repeat to compare runs (the first one picks the samples).
    #[arg(long = "run", required = true)]
    pub runs: Vec<PathBuf>,
    /// Split to draw from (default: the first run's test split).
    #[arg(long)]
    pub split: Option<String>,
    /// Protocol of the IoUs (default: the first run's).
    #[arg(long, value_enum)]
    pub protocol: Option<Protocol>,
    /// Use the first N samples of the split (default: as many as the first run's evaluation
    /// read).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Width of one panel in pixels.
    #[arg(long, default_value_t = 192,
          value_parser = super::bounds::within(super::bounds::PANEL.0, super::bounds::PANEL.1))]
    pub panel: u32,
    /// The PNG to write.
    #[arg(long, default_value = "figures.png")]
    pub out: PathBuf,
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

struct Figures(FiguresArgs);

impl BackendJob for Figures {
    type Output = anyhow::Result<()>;

    fn run<B: DeviceBackend>(self, device: B::Device, target: RunTarget) -> anyhow::Result<()> {
        let a = self.0;
        crate::util::atomic_file::check_writable_file(&a.out)?;
        let cache = a.cache.clone().unwrap_or_else(default_cache);
        let mut split = a.split.clone();
        let mut protocol = a.protocol;
        let mut limit = a.limit;
        let mut runs: Vec<Predicted> = vec![];
        for dir in &a.runs {
            let run = load_run::<B>(dir, &cache, &device)?;
            let split = split
                .get_or_insert_with(|| run.spec.test_split.clone())
                .clone();
            let protocol = *protocol.get_or_insert(run.spec.protocol);
            // Every run reads the first run's samples.
            let limit = *limit.get_or_insert_with(|| run.spec.limit_eval.unwrap_or(usize::MAX));
            let limit = (limit != usize::MAX).then_some(limit);
            let (data, probs) = predict_split(&run, &split, limit, &cache, &device, &target)?;
            let (_, scores) = score_samples(&probs, &data, protocol)?;
            if let Some(first) = runs.first() {
                let same = first.data.samples.len() == data.samples.len()
                    && first
                        .data
                        .samples
                        .iter()
                        .zip(&data.samples)
                        .all(|(x, y)| x.image == y.image && x.sentence == y.sentence);
                anyhow::ensure!(
                    same && first.data.image_size == data.image_size,
                    "{} reads other samples of `{split}` (or at another size) than {}: runs \
                     compared in one figure need the same data and image size",
                    dir.display(),
                    a.runs[0].display()
                );
            }
            runs.push(Predicted {
                label: format!(
                    "{}/{} seed {}",
                    run.spec.ablation, run.spec.variant, run.spec.seed
                ),
                data,
                probs,
                scores,
            });
        }
        let rows = pick_rows(&runs[0].scores);
        anyhow::ensure!(!rows.is_empty(), "the split has no samples to draw");
        for (name, i) in &rows {
            let ious: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.2}", 100.0 * r.scores[*i].iou))
                .collect();
            println!(
                "{name}: sample {i} ({:?}), IoU {}",
                runs[0].data.samples[*i].sentence,
                ious.join(" / ")
            );
        }
        draw(&runs, &rows, a.panel, &a.out)?;
        println!("wrote {}", a.out.display());
        Ok(())
    }
}

/// Runs the command.
pub fn run(device: DeviceSpec, args: FiguresArgs) -> anyhow::Result<()> {
    dispatch(device, Figures(args))?
}
