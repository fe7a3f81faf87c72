//! A run whose loss stops being finite: where it happened ([`Divergence`], recorded in the run's
//! `result.json`), the error training returns ([`Diverged`]) and the watch that stops training
//! at the first such batch ([`DivergenceWatch`]).

use std::sync::{Arc, Mutex};

use burn::train::Interrupter;
use serde::{Deserialize, Serialize};

/// The first batch whose loss was not finite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// `train` or `valid`.
    pub split: String,
    pub epoch: usize,
    /// The pass within the epoch (burn-train's iteration).
    pub pass: usize,
    /// The loss as text (`NaN`, `inf`, `-inf`: JSON has no such numbers).
    pub loss: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} loss is {} at epoch {}, pass {}",
            self.split, self.loss, self.epoch, self.pass
        )
    }
}

/// Training stopped at a non-finite loss.
#[derive(Clone, Debug, PartialEq)]
pub struct Diverged(pub Divergence);

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "training stopped: {} (diverged: try a lower learning rate)",
            self.0
        )
    }
}

impl std::error::Error for Diverged {}

/// Stops training through its [`Interrupter`] at the first non-finite loss and keeps where.
#[derive(Clone)]
pub struct DivergenceWatch {
    stop: Interrupter,
    found: Arc<Mutex<Option<Divergence>>>,
}

impl DivergenceWatch {
    pub fn new(stop: Interrupter) -> Self {
        Self {
            stop,
            found: Arc::default(),
        }
    }

    /// Checks one batch's loss; the first non-finite one stops training.
    pub fn check(&self, split: &str, epoch: usize, pass: usize, loss: f64) {
        if loss.is_finite() || self.stop.should_stop() {
            return;
        }
        let d = Divergence {
            split: split.into(),
            epoch,
            pass,
            loss: format!("{loss}"),
        };
        self.stop.stop(Some(&format!("{d} (diverged)")));
        self.found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(d);
    }

    /// Where training diverged, if it did.
    pub fn found(&self) -> Option<Divergence> {
        self.found.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
