//! A write that fails for want of space (a full disk) stops training with an error naming the
//! file instead of a cascade of panics through burn-train's threads, leaves nothing
//! half-written under a final name, and `--resume` then ends exactly where an uninterrupted run
//! ends.
//!
//! The full disk is one file: a symbolic link to `/dev/full` under the name the run is about to
//! write (every write to `/dev/full` fails with ENOSPC), so no test needs a small filesystem.

#![cfg(all(feature = "flex", target_os = "linux"))] // CPU backend; /dev/full

use crate::common;

use std::path::Path;
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use diffris_experiments::config::RunDir;
use diffris_experiments::config::recipe::{SelectBy, TrainSpec};
use diffris_experiments::diagnostics::step_probe::{ProbeSpec, ProbeWeights, to_data};
use diffris_experiments::inputs::split::EncodedSplit;
use diffris_experiments::training::{TrainOptions, Trained, Trainee, last_checkpoint, train};
use diffris_model::decoder::{DecoderConfig, LmpConfig};

type AB = Autodiff<Flex>;

/// The backend RNG is one per process: the runs of this file train one at a time.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn probe() -> ProbeSpec {
    ProbeSpec::tiny(DecoderConfig::Lmp(LmpConfig {
        hidden: 16,
        ..LmpConfig::default()
    }))
}

/// Three epochs of 8 samples in batches of 4, in `dir`.
fn run(
    spec: &ProbeSpec,
    data: &Arc<EncodedSplit>,
    dir: &Path,
    resume: bool,
    stop_after: Option<usize>,
) -> anyhow::Result<Trained<Flex>> {
    let device = Default::default();
    let model: Trainee<AB> = ProbeWeights::draw::<Flex>(spec, 5, &device)
        .build::<AB>(spec, &device)
        .unwrap();
    let settings = TrainSpec {
        epochs: 3,
        batch_size: 4,
        micro_batch: None,
        lr: 1e-3,
        weight_decay: 0.01,
        weight_decay_scope: Default::default(),
        lr_power: 0.9,
        select_by: SelectBy::Miou,
    };
    train::<AB>(
        model,
        data.clone(),
        data.clone(),
        &settings,
        &RunDir::at(dir),
        &[device],
        TrainOptions {
            resume,
            stop_after,
            ..common::quiet(3)
        },
    )
}

fn weights(t: &Trained<Flex>) -> Vec<(String, Vec<u32>)> {
    to_data(&t.model)
        .into_iter()
        .map(|(path, d)| {
            let bits = d.convert::<f32>().to_vec::<f32>().unwrap();
            (path, bits.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}

/// Makes every write to `path` fail with "No space left on device".
fn full_disk_at(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink("/dev/full", path).unwrap();
}

#[test]
fn a_checkpoint_that_finds_the_disk_full_stops_the_run_and_resume_recovers() {
    let _rng = crate::burn_rng();
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let spec = probe();
    let data = common::encoded_samples(&spec, 8, true);
    let straight_dir = tempfile::tempdir().unwrap();
    let straight = run(&spec, &data, straight_dir.path(), false, None).unwrap();

    let dir = tempfile::tempdir().unwrap();
    run(&spec, &data, dir.path(), false, Some(1)).unwrap();
    // Epoch 2's model record is written as `model-2.mpk.partial`, then renamed.
    let partial = dir.path().join("checkpoint").join("model-2.mpk.partial");
    full_disk_at(&partial);
    let err = run(&spec, &data, dir.path(), true, None)
        .err()
        .expect("a checkpoint that cannot be written stops the run");
    let msg = format!("{err:#}");
    assert!(msg.starts_with("training stopped: writing "), "{msg}");
    assert!(
        msg.contains("model-2.mpk.partial") && msg.contains("No space left on device"),
        "{msg}"
    );
    assert!(
        std::fs::symlink_metadata(&partial).is_err(),
        "the failed partial file is removed"
    );
    assert!(!dir.path().join("checkpoint").join("model-2.mpk").exists());
    assert_eq!(
        last_checkpoint(&RunDir::at(dir.path())),
        Some(1),
        "epoch 1 is whole"
    );

    // Space again: the resume continues from epoch 1 and ends as the straight run did.
    let resumed = run(&spec, &data, dir.path(), true, None).unwrap();
    assert_eq!(resumed.best_epoch, straight.best_epoch);
    assert_eq!(resumed.log.split("valid"), straight.log.split("valid"));
    assert_eq!(resumed.log.split("train"), straight.log.split("train"));
    assert!(
        weights(&resumed) == weights(&straight),
        "the same weights, bit for bit"
    );
}

#[test]
fn a_metric_log_that_finds_the_disk_full_stops_the_run_with_its_name() {
    let _rng = crate::burn_rng();
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let spec = probe();
    let data = common::encoded_samples(&spec, 8, true);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("train").join("epoch-1").join("Loss.log");
    full_disk_at(&log);
    // burn-train's own file logger panicked in its logging thread here ("Can log an item."),
    // and the panic took the event-store, processor and main threads with it.
    let err = run(&spec, &data, dir.path(), false, None)
        .err()
        .expect("a metric log that cannot be written stops the run");
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with("training stopped: writing the metric log ")
            && msg.contains("train/epoch-1/Loss.log")
            && msg.contains("No space left on device"),
        "{msg}"
    );
}

/// The logs are burn-train's layout, which the training curves read: one `value,count` line per
/// iteration, for every epoch, also the first one after a resume.
#[test]
fn every_epoch_has_its_iteration_logs_also_after_a_resume() {
    let _rng = crate::burn_rng();
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let spec = probe();
    let data = common::encoded_samples(&spec, 8, true);
    let dir = tempfile::tempdir().unwrap();
    run(&spec, &data, dir.path(), false, Some(1)).unwrap();
    let trained = run(&spec, &data, dir.path(), true, None).unwrap();
    let train = trained.log.split("train");
    for epoch in 1..=3 {
        let text =
            std::fs::read_to_string(dir.path().join(format!("train/epoch-{epoch}/Loss.log")))
                .unwrap_or_else(|e| panic!("epoch {epoch}: {e}"));
        let lines: Vec<(f64, f64)> = text
            .lines()
            .map(|l| {
                let (v, n) = l.split_once(',').expect("value,count");
                (v.parse().unwrap(), n.parse().unwrap())
            })
            .collect();
        // Two iterations of four samples, each logged with weight 1: their mean is the epoch
        // record's mean loss per batch.
        assert_eq!(lines.len(), 2, "epoch {epoch}: {text}");
        assert!(
            lines.iter().all(|&(_, n)| n == 1.0),
            "epoch {epoch}: {text}"
        );
        let mean = lines.iter().map(|(v, _)| v).sum::<f64>() / 2.0;
        let expected = train[&epoch].loss();
        assert!(
            (mean - expected).abs() < 1e-4 * expected.abs().max(1.0),
            "epoch {epoch}: logged mean {mean}, epoch record {expected}"
        );
    }
}
