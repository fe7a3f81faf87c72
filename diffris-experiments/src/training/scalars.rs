//! The scalars a run logs for TensorBoard ([`crate::records::tfevents`]) and as JSON lines
//! (`scalars.jsonl`), on one step axis, the optimizer steps:
//!
//! - per optimizer step: `train/loss` (the mean of the step's passes' losses, as burn-train's
//!   `Loss` metric logs each pass) and `train/lr` (the rate the step used, from the run's
//!   schedule);
//! - per epoch, at the epoch's last step: `epoch/train_loss`, `epoch/train_miou`,
//!   `epoch/val_loss`, `epoch/val_miou` and `epoch/val_oiou`, the columns of `metrics.csv`.
//!
//! A resumed run opens a new event file at its first step, which withdraws what a killed
//! process logged from there on.

use std::path::Path;

use crate::records::tfevents::{Scalar, ScalarSink, now};
use crate::training::epoch_log::EpochLog;
use crate::training::schedule::PolyLr;

/// The scalar log of one training process.
pub struct ScalarLog {
    file: ScalarSink,
    /// Passes per epoch and per optimizer step.
    passes: usize,
    per_step: usize,
    schedule: PolyLr,
    log: EpochLog,
    /// The losses of the passes of the step under way.
    pending: Vec<f64>,
    /// The last epoch whose summary was written.
    epochs_done: usize,
}

impl ScalarLog {
    /// Logs into the run folder `dir` from epoch `start + 1` on; a folder that cannot take the
    /// files leaves the run without them (said once), not without its results.
    pub fn new(
        dir: &Path,
        start: usize,
        (passes, per_step): (usize, usize),
        schedule: PolyLr,
        log: EpochLog,
    ) -> Self {
        let per_step = per_step.max(1);
        let first = if start > 0 {
            (start * passes / per_step + 1) as i64
        } else {
            0
        };
        let file = ScalarSink::create(dir, first);
        Self {
            file,
            passes,
            per_step,
            schedule,
            log,
            pending: Vec::new(),
            epochs_done: start,
        }
    }

    /// One pass's loss, logged before the pass is rendered.
    pub fn pass_loss(&mut self, loss: f64) {
        self.pending.push(loss);
    }

    /// Pass `iteration` (1-based) of `epoch` (1-based) has ended: at a step's last pass, the
    /// step's scalars; at an epoch's first pass, the summary of the epochs before it.
    pub fn pass_done(&mut self, epoch: usize, iteration: usize) {
        if epoch > 0 {
            self.epochs_up_to(epoch - 1);
        }
        let pass = epoch.saturating_sub(1) * self.passes + iteration;
        if pass == 0 || !pass.is_multiple_of(self.per_step) || self.pending.is_empty() {
            return;
        }
        let step = pass / self.per_step;
        let loss = self.pending.iter().sum::<f64>() / self.pending.len() as f64;
        self.pending.clear();
        let lr = self
            .schedule
            .rate_at((step - 1) * self.schedule.passes_per_step.max(1));
        let wall_time = now();
        let at = |tag: &str, value| Scalar {
            wall_time,
            step: step as i64,
            tag: tag.into(),
            value,
        };
        self.file
            .write(&[at("train/loss", loss), at("train/lr", lr)]);
    }

    /// Writes the summaries of the epochs after the last written, up to `epoch`, whose
    /// validation has ended.
    pub fn epochs_up_to(&mut self, epoch: usize) {
        // Called on every pass: the log is copied only when an epoch is due.
        if self.epochs_done >= epoch {
            return;
        }
        let (train, valid) = (self.log.split("train"), self.log.split("valid"));
        while self.epochs_done < epoch {
            let e = self.epochs_done + 1;
            self.epochs_done = e;
            let wall_time = now();
            let step = (e * self.passes / self.per_step) as i64;
            let at = |tag: &str, value| Scalar {
                wall_time,
                step,
                tag: tag.into(),
                value,
            };
            let mut scalars = Vec::new();
            if let Some(t) = train.get(&e) {
                scalars.extend([
                    at("epoch/train_loss", t.loss()),
                    at("epoch/train_miou", t.miou()),
                ]);
            }
            if let Some(v) = valid.get(&e) {
                scalars.extend([
                    at("epoch/val_loss", v.loss()),
                    at("epoch/val_miou", v.miou()),
                    at("epoch/val_oiou", v.oiou()),
                ]);
            }
            self.file.write(&scalars);
        }
    }
}
