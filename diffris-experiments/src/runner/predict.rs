//! A finished run's predictions on a split, for `eval` and `figures`.

use std::path::Path;

use diffris_kernels::SdBackend;

use crate::device::backend::RunTarget;
use crate::device::usage::capacity;
use crate::eval::evaluate::predict;
use crate::inputs::split::EncodedSplit;
use crate::plan::{Budget, Plan};
use crate::records::reload::LoadedRun;
use crate::runner::prepare::{cached_split, encode_into};

/// A finished run's predictions on the first `limit` samples of `split` (`None`: all): the
/// encoded split (from the encoded cache under `cache` when the run's training or an earlier
/// command encoded it) and each sample's foreground probabilities at the network size, in
/// batches that fit the device.
pub fn predict_split<B: SdBackend>(
    run: &LoadedRun<B>,
    split: &str,
    limit: Option<usize>,
    cache: &Path,
    device: &B::Device,
    target: &RunTarget,
) -> anyhow::Result<(EncodedSplit, Vec<Vec<f32>>)> {
    let spec = &run.spec;
    let budget = Budget::shared(capacity(target.spec)?, 1, target.spec);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = Plan::of::<B>(spec, device, 1, &budget, threads);
    let bar = indicatif::ProgressBar::new(0);
    let say = |line: String| eprintln!("{line}");
    let data = cached_split::<B>(
        spec,
        split,
        limit,
        &run.sd_path,
        cache,
        device,
        &say,
        |samples, path, key| {
            let sd = diffris_model::sd::StableDiffusion {
                text_encoder: run.model.text_encoder.clone(),
                vae: run.model.vae.clone(),
                unet: run.model.unet().clone(),
            };
            encode_into(
                spec,
                samples,
                &sd,
                &run.tokenizer,
                device,
                &plan,
                &bar,
                path,
                key,
            )
        },
    )?;
    let probs = predict(&run.model, &data, plan.eval.batch, device, &bar, None)?;
    bar.finish_and_clear();
    Ok((data, probs))
}
