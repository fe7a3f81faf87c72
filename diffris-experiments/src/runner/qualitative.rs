//! `diffris figures` from its request to its PNG: each run's predictions on the split, scored,
//! and drawn as the paper's qualitative figures (Figs. 5-7; the drawing is
//! [`crate::report::figures`]).

use std::path::PathBuf;

use crate::device::backend::{BackendJob, DeviceBackend, DeviceSpec, RunTarget, dispatch};
use crate::eval::evaluate::score_samples;
use crate::eval::metrics::Protocol;
use crate::records::reload::load_run;
use crate::report::figures::{Predicted, draw, pick_rows};
use crate::runner::predict::predict_split;
use crate::util::cache::default_cache;

/// What `diffris figures` was asked (its arguments).
pub struct Request {
    pub runs: Vec<PathBuf>,
    pub split: Option<String>,
    pub protocol: Option<Protocol>,
    pub limit: Option<usize>,
    pub panel: u32,
    pub out: PathBuf,
    pub cache: Option<PathBuf>,
}

struct Figures(Request);

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

/// Runs `request` on `device`.
pub fn run(device: DeviceSpec, request: Request) -> anyhow::Result<()> {
    dispatch(device, Figures(request))?
}
