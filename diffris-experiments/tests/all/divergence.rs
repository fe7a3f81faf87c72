//! A diverging run stops with an error naming the epoch and pass of its first non-finite loss,
//! instead of finishing with a result of zeros.

#![cfg(feature = "flex")] // runs on the CPU reference backend

use crate::binary;
use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use diffris_data::{MaskSource, Sample};
use diffris_experiments::config::RunDir;
use diffris_experiments::config::recipe::{SelectBy, TrainSpec};
use diffris_experiments::diagnostics::step_probe::{ProbeSpec, ProbeWeights};
use diffris_experiments::inputs::split::EncodedSplit;
use diffris_experiments::training::divergence::Diverged;
use diffris_experiments::training::{Trainee, train};
use diffris_model::decoder::{DecoderConfig, LmpConfig};

type AB = Autodiff<Flex>;

/// `n` samples of ones with a half-image mask; the mask of sample `bad` holds a NaN, which the
/// loss reads directly (a NaN in a latent can be absorbed on the way: max-based ops such as
/// clamps return the other operand).
fn data(spec: &ProbeSpec, n: usize, bad: usize) -> Arc<EncodedSplit> {
    let (h, w) = spec.model.image_size;
    let f = spec.sd.vae.downsampling();
    let c = spec.sd.unet.in_channels;
    let d = spec.sd.clip.hidden_size;
    let sample = Sample {
        id: "s".into(),
        image: PathBuf::from("s.png"),
        mask: MaskSource::File {
            path: PathBuf::from("m.png"),
            threshold: 127,
        },
        sentence: "the object".into(),
        category: None,
        origin: PathBuf::from("test"),
    };
    let mut masks: Vec<f32> = (0..n * h * w)
        .map(|i| ((i % (h * w)) < h * w / 2) as u8 as f32)
        .collect();
    masks[bad * h * w + 3] = f32::NAN;
    Arc::new(EncodedSplit::from_vecs(
        vec![sample; n],
        (h, w),
        [c, h / f, w / f],
        [77, d],
        &vec![1.0; n * c * (h / f) * (w / f)],
        &vec![1.0; n * 77 * d],
        vec![4; n],
        &masks,
    ))
}

#[test]
fn a_non_finite_loss_stops_the_run_with_an_error_naming_the_pass() {
    let _rng = crate::burn_rng();
    let device = Default::default();
    let spec = ProbeSpec::tiny(DecoderConfig::Lmp(LmpConfig {
        hidden: 16,
        ..LmpConfig::default()
    }));
    let model: Trainee<AB> = ProbeWeights::draw::<Flex>(&spec, 5, &device)
        .build::<AB>(&spec, &device)
        .unwrap();
    let data = data(&spec, 8, 5);
    let settings = TrainSpec {
        epochs: 3,
        batch_size: 2,
        micro_batch: None,
        lr: 1e-3,
        weight_decay: 0.0,
        weight_decay_scope: Default::default(),
        lr_power: 0.9,
        select_by: SelectBy::Miou,
    };
    let dir = tempfile::tempdir().unwrap();
    let err = train::<AB>(
        model,
        data.clone(),
        data,
        &settings,
        &RunDir::at(dir.path()),
        &[device],
        common::quiet(0),
    )
    .err()
    .unwrap_or_else(|| {
        panic!(
            "a NaN in a mask makes the loss NaN; the log: {}",
            std::fs::read_to_string(dir.path().join("epochs.json")).unwrap_or_default()
        )
    });
    let msg = err.to_string();
    // Sample 5 falls in some pass of epoch 1 (every epoch visits every sample): the error names
    // that epoch and its pass, and the run returns no model.
    assert!(
        msg.contains("the train loss is NaN at epoch 1, pass "),
        "{msg}"
    );
    // The same, as the record a run directory keeps.
    let Diverged(d) = err.downcast_ref::<Diverged>().expect("a typed divergence");
    assert_eq!(
        (d.split.as_str(), d.epoch, d.loss.as_str()),
        ("train", 1, "NaN")
    );
    // Passes of 2 samples: sample 5 is in the third pass of some order of 4 passes.
    assert!((1..=4).contains(&d.pass), "{d:?}");
}

/// Through the binary: a diverging run is recorded as diverged in its `result.json`, the table
/// says `diverged` and names it, the command fails; a rerun reuses the record (the same seed
/// diverges at the same pass) instead of training again.
#[test]
fn a_diverged_run_is_recorded_shown_in_the_table_and_reused() {
    let _rng = crate::burn_rng();
    let results = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let ablations = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");
    let run = || {
        binary::outcome(
            binary::diffris()
                .args(["train", "cp_adapter", "--variant", "none", "--lr", "1e9"])
                .args(["--epochs", "2", "--limit-train", "16", "--limit-eval", "4"])
                .args(["--ablations", ablations, "--results"])
                .arg(results.path())
                .arg("--cache")
                .arg(cache.path()),
        )
    };
    let (ok, text) = run();
    assert!(!ok, "{text}");
    assert!(
        text.contains("1 run(s) diverged")
            && text.contains("cp_adapter/none seed 0: the train loss is NaN at epoch 1, pass"),
        "{text}"
    );
    let dir = results.path().join("runs/cp_adapter/none/seed-0");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["diverged"]["split"], "train");
    assert_eq!(result["diverged"]["loss"], "NaN");
    assert!(result.get("test").is_none(), "no metrics: {result}");
    let table = std::fs::read_to_string(results.path().join("cp_adapter/table.md")).unwrap();
    assert!(
        table.contains("| 1 | w/o CP-adapter | diverged | 61.43 | diverged | 75.52 |")
            && table.contains("Diverged, left out of the means: w/o CP-adapter seed 0"),
        "{table}"
    );
    // The CSV counts it: no finished seed, one diverged, no mean.
    let csv = std::fs::read_to_string(results.path().join("cp_adapter/table.csv")).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("none,\"w/o CP-adapter\",0,1,,,,,,,61.43,")),
        "{csv}"
    );

    // Nothing to evaluate, said as such.
    let (ok, text) = binary::outcome(
        binary::diffris()
            .args(["eval", "--run"])
            .arg(&dir)
            .arg("--cache")
            .arg(cache.path()),
    );
    assert!(
        !ok && text.contains("diverged (the train loss is NaN"),
        "{text}"
    );

    let (ok, again) = run();
    assert!(!ok && again.contains("1 run(s) diverged"), "{again}");
    assert!(
        !again.contains(" training: "),
        "reused, not trained again: {again}"
    );
}
