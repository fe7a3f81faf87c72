//! A training pass that panics (on a GPU: out of memory while the model is copied to the device
//! or during its backward) ends the run with an error naming it, on one device and on several,
//! instead of a hang: burn-train 0.21's multi-device loop waits forever for the output of a
//! worker that panicked.
//!
//! The panic here is real, not injected: one sample's end-of-text index points past the 77
//! token states, and the decoder's gather of the sentence feature panics on it (the loader
//! does not read the index, so the panic happens in the pass, on its device's thread).

#![cfg(feature = "flex")] // runs on the CPU reference backend

use crate::common;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use burn::backend::{Autodiff, Flex};
use diffris_experiments::config::RunDir;
use diffris_experiments::config::recipe::{SelectBy, TrainSpec};
use diffris_experiments::diagnostics::step_probe::{ProbeSpec, ProbeWeights};
use diffris_experiments::inputs::split::EncodedSplit;
use diffris_experiments::training::{Trainee, train};
use diffris_model::decoder::{CamdConfig, DecoderConfig};

type AB = Autodiff<Flex>;

/// Trains on `workers` CPU workers, `samples` of them with their end-of-text index past the
/// text; the error's text, or a failure of the test if training has not ended in 3 minutes (it takes seconds).
fn failure(workers: usize, bad: &'static [usize]) -> String {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let spec = ProbeSpec::tiny(DecoderConfig::Camd(CamdConfig::default()));
        let device = Default::default();
        let model: Trainee<AB> = ProbeWeights::draw::<Flex>(&spec, 5, &device)
            .build::<AB>(&spec, &device)
            .unwrap();
        let mut data: EncodedSplit =
            Arc::into_inner(common::encoded_samples(&spec, 8, true)).unwrap();
        for &i in bad {
            data.eos[i] = 1_000;
        }
        let data = Arc::new(data);
        let settings = TrainSpec {
            epochs: 2,
            batch_size: 4,
            micro_batch: Some(2),
            lr: 1e-3,
            weight_decay: 0.0,
            weight_decay_scope: Default::default(),
            lr_power: 0.9,
            select_by: SelectBy::Miou,
        };
        let dir = tempfile::tempdir().unwrap();
        let result = train::<AB>(
            model,
            data.clone(),
            data,
            &settings,
            &RunDir::at(dir.path()),
            &vec![device; workers],
            common::quiet(0),
        );
        let _ = send.send(result.err().map(|e| format!("{e:#}")));
    });
    receive
        .recv_timeout(Duration::from_secs(180))
        .expect("training with a failing pass did not end within 3 minutes")
        .expect("a pass that panics fails the run")
}

#[test]
fn a_panicking_pass_on_one_device_is_an_error() {
    let _rng = crate::burn_rng();
    let msg = failure(1, &[3]);
    assert!(
        msg.starts_with("training failed: a pass panicked: index 1000 out of bounds"),
        "{msg}"
    );
}

#[test]
fn a_panicking_pass_on_one_of_two_devices_is_an_error_not_a_hang() {
    let _rng = crate::burn_rng();
    // Whichever pass of the epoch holds sample 3 fails, on device 0 or 1; the other device's
    // pass waits for its turn or runs, and the round ends either way.
    let msg = failure(2, &[3]);
    assert!(
        msg.starts_with("training stopped: a training pass on device "),
        "{msg}"
    );
    assert!(
        msg.contains("(Cpu) panicked: "),
        "the device is named: {msg}"
    );
    assert!(
        msg.contains("index 1000 out of bounds for dimension of size 77"),
        "the panic's message: {msg}"
    );
}

#[test]
fn passes_failing_on_both_devices_are_an_error_not_a_hang() {
    let _rng = crate::burn_rng();
    // Every sample is bad: both passes of the first round fail.
    let msg = failure(2, &[0, 1, 2, 3, 4, 5, 6, 7]);
    assert!(
        msg.starts_with("training stopped: a training pass on device "),
        "{msg}"
    );
}
