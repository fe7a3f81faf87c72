//! Gradient accumulation computes what the whole batch computes: the summed gradients of a
//! batch's micro-batches (as burn-train's accumulator sums them) equal the batch's gradients, and
//! training with micro-batches ends at the weights of training with whole batches.
//!
//! The decoders hold BatchNorm layers, whose training-mode statistics are taken per pass: a
//! micro-batch normalises with its own mean and variance (as the paper's 8 GPUs each did with
//! their 4 samples), which the whole batch does not reproduce. The samples here are therefore
//! copies of one sample, so that every pass sees the same statistics and the comparison isolates
//! the accumulation itself (loss weights, pass plan, optimizer steps).

#![cfg(feature = "flex")] // runs on the CPU reference backend

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::data::dataloader::DataLoader;
use burn::optim::GradientsAccumulator;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use burn::train::TrainStep;
use diffris_data::{MaskSource, Sample};
use diffris_experiments::config::RunDir;
use diffris_experiments::config::recipe::{SelectBy, TrainSpec};
use diffris_experiments::diagnostics::step_probe::{
    ProbeSpec, ProbeWeights, grads_by_path, to_data,
};
use diffris_experiments::inputs::split::EncodedSplit;
use diffris_experiments::training::loader::EpochLoader;
use diffris_experiments::training::{Trainee, train};
use diffris_model::decoder::{DecoderConfig, LmpConfig};

type AB = Autodiff<Flex>;

/// The backend RNG is one per process: the tests of this file draw from it one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn spec() -> ProbeSpec {
    ProbeSpec::tiny(DecoderConfig::Lmp(LmpConfig {
        hidden: 16,
        ..LmpConfig::default()
    }))
}

/// `n` copies of one encoded sample (random latent and text states, a rectangular mask).
fn copies(spec: &ProbeSpec, n: usize) -> Arc<EncodedSplit> {
    let device = Default::default();
    let (h, w) = spec.model.image_size;
    let f = spec.sd.vae.downsampling();
    let c = spec.sd.unet.in_channels;
    let d = spec.sd.clip.hidden_size;
    Flex::seed(&device, 11);
    let latent: Vec<f32> =
        Tensor::<Flex, 3>::random([c, h / f, w / f], Distribution::Normal(0.0, 1.0), &device)
            .into_data()
            .to_vec()
            .unwrap();
    let text: Vec<f32> =
        Tensor::<Flex, 2>::random([77, d], Distribution::Normal(0.0, 1.0), &device)
            .into_data()
            .to_vec()
            .unwrap();
    let mask: Vec<f32> = (0..h * w)
        .map(|i| ((i / w) > h / 4 && (i / w) < h / 2 && (i % w) < w / 2) as u8 as f32)
        .collect();
    let sample = Sample {
        id: "copy".into(),
        image: PathBuf::from("copy.png"),
        mask: MaskSource::File {
            path: PathBuf::from("copy-mask.png"),
            threshold: 127,
        },
        sentence: "the object".into(),
        category: None,
        origin: PathBuf::from("test"),
    };
    Arc::new(EncodedSplit::from_vecs(
        vec![sample; n],
        (h, w),
        [c, h / f, w / f],
        [77, d],
        &latent.repeat(n),
        &text.repeat(n),
        vec![4; n],
        &mask.repeat(n),
    ))
}

/// Largest difference of two parameter sets, each tensor on its own scale (at least `floor`).
fn worst(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], floor: f32) -> (f32, String) {
    assert_eq!(a.len(), b.len());
    let mut out = (0f32, String::new());
    for ((path, x), (path_b, y)) in a.iter().zip(b) {
        assert_eq!(path, path_b);
        let scale = x.iter().fold(floor, |m, v| m.max(v.abs()));
        let diff = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        if diff / scale > out.0 {
            out = (diff / scale, path.clone());
        }
    }
    out
}

#[test]
fn summed_micro_batch_gradients_are_the_batch_gradients() {
    let _rng = crate::burn_rng();
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = Default::default();
    let spec = spec();
    let weights = ProbeWeights::draw::<Flex>(&spec, 5, &device);
    let model: Trainee<AB> = weights.build::<AB>(&spec, &device).unwrap();
    let data = copies(&spec, 4);

    let whole = TrainStep::step(&model, data.batch::<AB>(&[0, 1, 2, 3], &device));
    let whole: Vec<(String, Vec<f32>)> = grads_by_path(&model, &whole.grads).into_iter().collect();

    // Batch 4 as micro-batches of 3 and 1 (weights 3/4 and 1/4), from the training loader.
    let loader = EpochLoader::<AB>::new(data, 4, 3, Some(0), 0, device);
    let mut accumulator = GradientsAccumulator::<Trainee<AB>>::new();
    let mut passes = 0;
    for batch in loader.iter() {
        passes += 1;
        accumulator.accumulate(&model, TrainStep::step(&model, batch).grads);
    }
    assert_eq!(passes, 2);
    let summed = accumulator.grads();
    let summed: Vec<(String, Vec<f32>)> = grads_by_path(&model, &summed).into_iter().collect();
    assert!(
        whole.len() > 20,
        "{} parameters with gradients",
        whole.len()
    );
    // f32 sums in another grouping: a few ulps per layer (measured: the worst tensor 7e-7 of
    // its scale); unweighted passes would be off by a factor 2 (a relative difference of 1).
    let (diff, path) = worst(&whole, &summed, 1e-6);
    eprintln!("worst gradient difference: {path} {diff:e}");
    assert!(diff < 1e-4, "{path}: {diff}");
}

fn trained(micro_batch: Option<usize>) -> (usize, Vec<(String, Vec<f32>)>) {
    let device = Default::default();
    let spec = spec();
    let weights = ProbeWeights::draw::<Flex>(&spec, 5, &device);
    let model: Trainee<AB> = weights.build::<AB>(&spec, &device).unwrap();
    // One epoch (with copies of one sample, the validation scores of two epochs can tie to the
    // last bit, and the best-epoch pick would then compare two different checkpoints).
    let data = copies(&spec, 16);
    let settings = TrainSpec {
        epochs: 1,
        batch_size: 4,
        micro_batch,
        lr: 1e-3,
        weight_decay: 0.01,
        weight_decay_scope: Default::default(),
        lr_power: 0.9,
        select_by: SelectBy::Miou,
    };
    let dir = tempfile::tempdir().unwrap();
    let out = train::<AB>(
        model,
        data.clone(),
        data,
        &settings,
        &RunDir::at(dir.path()),
        &[device],
        common::quiet(0),
    )
    .unwrap();
    let weights = to_data(&out.model)
        .into_iter()
        .filter(|(path, _)| !path.contains("running_"))
        .map(|(path, d)| (path, d.convert::<f32>().to_vec().unwrap()))
        .collect();
    (out.best_epoch, weights)
}

#[test]
fn training_with_micro_batches_ends_at_the_weights_of_whole_batches() {
    let _rng = crate::burn_rng();
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (best, whole) = trained(None);
    for micro in [2, 1] {
        let (best_micro, accumulated) = trained(Some(micro));
        assert_eq!(best_micro, best, "micro-batch {micro}");
        // Four AdamW steps of lr 1e-3 (16 samples in batches of 4): runs that differ only in how
        // f32 sums are grouped. Adam divides each update by the gradient's running RMS, which
        // amplifies rounding for weights whose gradients are tiny, so the bound is on each
        // tensor's scale (at least 1e-3, an update's size). Measured: 3.5e-5 of the scale for
        // micro-batches of 2, 1.1e-4 for micro-batches of 1 (BatchNorm over one sample sums in
        // yet another order). An optimizer step per pass instead of per batch would add updates
        // of 1e-3 each, over 1e-2 of a weight tensor's scale (about 0.1).
        let (diff, path) = worst(&whole, &accumulated, 1e-3);
        assert!(diff < 5e-4, "micro-batch {micro}: {path}: {diff}");
        eprintln!("micro-batch {micro}: worst {path} {diff:e}");
    }
}
