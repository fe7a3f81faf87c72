//! Data-parallel training on several devices (burn-train's `MultiDevice` strategy) computes what
//! one device computes. The CPU backend has one device; `[Flex, Flex]` runs two worker threads
//! on it, each with its own share of every batch, which is the code path of `cuda:0,cuda:1`.
//!
//! - Workers equal one device with the same micro-batches **bit for bit**, with dropout on: the
//!   passes hold the same samples, their random draws and BatchNorm updates come in the same
//!   order (the turnstile), and their gradients are summed in the same order
//!   (`OrderedMultiDevice`), also with three passes per step and with accumulation.
//! - Two workers equal one device with the whole batch in one pass within the tolerance of
//!   gradient accumulation (`tests/accumulation.rs`), on copies of one sample (BatchNorm takes
//!   its statistics per pass).

#![cfg(feature = "flex")] // runs on the CPU reference backend

use crate::common;

use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use diffris_experiments::config::RunDir;
use diffris_experiments::config::recipe::{SelectBy, TrainSpec};
use diffris_experiments::diagnostics::step_probe::{ProbeSpec, ProbeWeights, to_data};
use diffris_experiments::inputs::split::EncodedSplit;
use diffris_experiments::training::epoch_log::EpochSums;
use diffris_experiments::training::{Trainee, train};
use diffris_model::decoder::{DecoderConfig, LmpConfig};

type AB = Autodiff<Flex>;

/// The backend RNG is one per process: the tests of this file draw from it one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn probe(dropout: f64) -> ProbeSpec {
    let mut spec = ProbeSpec::tiny(DecoderConfig::Lmp(LmpConfig {
        hidden: 16,
        ..LmpConfig::default()
    }));
    spec.model.adapter.dropout = dropout;
    spec
}

struct Outcome {
    best_epoch: usize,
    weights: Vec<(String, Vec<f32>)>,
    train: Vec<EpochSums>,
    valid: Vec<EpochSums>,
}

fn trained(
    spec: &ProbeSpec,
    data: Arc<EncodedSplit>,
    (batch_size, epochs, micro): (usize, usize, Option<usize>),
    workers: usize,
) -> Outcome {
    let device = Default::default();
    let weights = ProbeWeights::draw::<Flex>(spec, 5, &device);
    let model: Trainee<AB> = weights.build::<AB>(spec, &device).unwrap();
    let settings = TrainSpec {
        epochs,
        batch_size,
        micro_batch: micro,
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
        &vec![device; workers],
        common::quiet(3),
    )
    .unwrap();
    let split = |name: &str| out.log.split(name).into_values().collect::<Vec<_>>();
    Outcome {
        best_epoch: out.best_epoch,
        train: split("train"),
        valid: split("valid"),
        weights: to_data(&out.model)
            .into_iter()
            .map(|(path, d)| (path, d.convert::<f32>().to_vec().unwrap()))
            .collect(),
    }
}

#[test]
fn workers_train_bit_for_bit_as_one_device_with_the_same_micro_batches() {
    let _rng = crate::burn_rng();
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let spec = probe(0.1);
    let data = common::encoded_samples(&spec, 12, true);
    // (workers, batch, micro-batch): one pass per worker per step; three passes per step, whose
    // sum depends on its order; two rounds of two workers per step (accumulation).
    for (workers, batch, micro) in [(2, 4, 2), (3, 6, 2), (2, 4, 1)] {
        let one = trained(&spec, data.clone(), (batch, 2, Some(micro)), 1);
        let many = trained(&spec, data.clone(), (batch, 2, Some(micro)), workers);
        let case = format!("{workers} workers, batch {batch}, micro-batch {micro}");
        assert_eq!(one.valid.len(), 2);
        assert_eq!(many.best_epoch, one.best_epoch, "{case}");
        assert_eq!(
            many.valid, one.valid,
            "{case}: validation sums of every epoch"
        );
        assert_eq!(
            many.train, one.train,
            "{case}: training sums of every epoch"
        );
        assert_eq!(many.weights.len(), one.weights.len());
        for ((path, a), (_, b)) in one.weights.iter().zip(&many.weights) {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{case}: {path} differs"
            );
        }
    }

    // The draws are applied: without dropout the same run ends elsewhere, so the equality
    // above is one of runs whose every dropout mask matched.
    let one = trained(&spec, data.clone(), (4, 2, Some(2)), 1);
    let still = trained(&probe(0.0), data, (4, 2, Some(2)), 1);
    assert!(
        still
            .weights
            .iter()
            .zip(&one.weights)
            .any(|((_, a), (_, b))| a != b),
        "dropout 0.1 and 0 trained the same weights"
    );
}

#[test]
fn two_workers_train_as_one_device_with_whole_batches() {
    let _rng = crate::burn_rng();
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let spec = probe(0.0);
    let data = common::encoded_samples(&spec, 16, false);
    let whole = trained(&spec, data.clone(), (4, 1, None), 1);
    let two = trained(&spec, data, (4, 1, None), 2);
    assert_eq!(two.best_epoch, whole.best_epoch);
    // One epoch (with copies of one sample the validation scores of two epochs can tie to the
    // last bit, and the best-epoch pick would compare two different checkpoints): four AdamW
    // steps (16 samples in batches of 4) that differ only in how f32
    // sums are grouped: the bound of tests/accumulation.rs, on each tensor's scale (at least
    // 1e-3, an update's size). Two workers each stepping alone would add updates of 1e-3.
    let mut worst = (0f32, String::new());
    for ((path, a), (_, b)) in whole.weights.iter().zip(&two.weights) {
        if path.contains("running_") {
            continue;
        }
        let scale = a.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        if diff / scale > worst.0 {
            worst = (diff / scale, path.clone());
        }
    }
    eprintln!("worst weight difference: {} {:e}", worst.1, worst.0);
    assert!(worst.0 < 5e-4, "{}: {}", worst.1, worst.0);
}
