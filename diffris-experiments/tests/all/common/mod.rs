//! What several test files build: small encoded splits for training runs on the CPU backend,
//! and the options of such a run.
// Each test file uses some of these.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use diffris_data::{MaskSource, Sample};
use diffris_experiments::diagnostics::step_probe::ProbeSpec;
use diffris_experiments::inputs::split::EncodedSplit;
use diffris_experiments::training::TrainOptions;

/// `n` encoded samples: distinct random latents and text states (`distinct`), or `n` copies of
/// the first; masks are rectangles of different heights.
pub fn encoded_samples(spec: &ProbeSpec, n: usize, distinct: bool) -> Arc<EncodedSplit> {
    let device = Default::default();
    let (h, w) = spec.model.image_size;
    let f = spec.sd.vae.downsampling();
    let c = spec.sd.unet.in_channels;
    let d = spec.sd.clip.hidden_size;
    let k = if distinct { n } else { 1 };
    Flex::seed(&device, 11);
    let draw = |shape: [usize; 3]| -> Vec<f32> {
        Tensor::<Flex, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device)
            .into_data()
            .to_vec()
            .unwrap()
    };
    let latents = draw([k * c, h / f, w / f]).repeat(n / k);
    let text = draw([k, 77, d]).repeat(n / k);
    let masks: Vec<f32> = (0..n)
        .flat_map(|s| {
            let top = if distinct { s % (h / 2) } else { h / 4 };
            (0..h * w)
                .map(move |i| ((i / w) > top && (i / w) < h / 2 && (i % w) < w / 2) as u8 as f32)
        })
        .collect();
    let sample = |i: usize| Sample {
        id: format!("s{i}"),
        image: PathBuf::from(format!("s{i}.png")),
        mask: MaskSource::File {
            path: PathBuf::from(format!("s{i}-mask.png")),
            threshold: 127,
        },
        sentence: "the object".into(),
        category: None,
        origin: PathBuf::from("test"),
    };
    Arc::new(EncodedSplit::from_vecs(
        (0..n).map(sample).collect(),
        (h, w),
        [c, h / f, w / f],
        [77, d],
        &latents,
        &text,
        vec![4; n],
        &masks,
    ))
}

/// The options of a test's training run: `seed`, from the start to the last epoch, no progress
/// output, several devices in the ordered loop.
pub fn quiet(seed: u64) -> TrainOptions {
    TrainOptions {
        seed,
        resume: false,
        stop_after: None,
        bar: indicatif::ProgressBar::hidden(),
        heartbeat: None,
        parallel: diffris_experiments::device::backend::DataParallel::Ordered,
        eval_batch: None,
    }
}
