//! A burn-train renderer that drives one progress bar over all training iterations.

use burn::train::LearnerSummary;
use std::collections::HashMap;

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use indicatif::ProgressBar;

use crate::training::epoch_log::EpochLog;
use crate::training::scalars::ScalarLog;
use crate::training::schedule::PolyLr;
use crate::util::progress::Heartbeat;

/// A progress bar over the samples of all training epochs and, for runs nobody watches,
/// [`Heartbeat`] lines with the epoch, optimizer step, running loss and learning rate.
pub struct BarRenderer {
    bar: ProgressBar,
    epochs: usize,
    /// Samples and passes of one epoch, and passes per optimizer step (over all devices).
    per_epoch: usize,
    passes: usize,
    per_step: usize,
    heartbeat: Option<Heartbeat>,
    log: EpochLog,
    schedule: PolyLr,
    /// The TensorBoard scalars, fed the `Loss` metric's entries.
    scalars: Option<ScalarLog>,
    names: HashMap<MetricId, String>,
}

impl BarRenderer {
    /// `schedule` is the run's learning-rate schedule (read, not stepped: the rate of each line).
    pub fn new(
        bar: ProgressBar,
        (epochs, per_epoch, passes, per_step): (usize, usize, usize, usize),
        heartbeat: Option<Heartbeat>,
        log: EpochLog,
        schedule: PolyLr,
    ) -> Self {
        Self {
            bar,
            epochs,
            per_epoch,
            passes,
            per_step,
            heartbeat,
            log,
            schedule,
            scalars: None,
            names: HashMap::new(),
        }
    }

    /// Also logs the run's scalars through `scalars`.
    pub fn with_scalars(mut self, scalars: ScalarLog) -> Self {
        self.scalars = Some(scalars);
        self
    }
}

impl MetricsRendererTraining for BarRenderer {
    fn update_train(&mut self, state: MetricState) {
        if let (Some(scalars), MetricState::Numeric(entry, value)) = (&mut self.scalars, state)
            && self.names.get(&entry.metric_id).map(String::as_str) == Some("Loss")
        {
            scalars.pass_loss(match value {
                NumericEntry::Value(v) => v,
                NumericEntry::Aggregated {
                    aggregated_value, ..
                } => aggregated_value,
            });
        }
    }

    fn update_valid(&mut self, _state: MetricState) {}

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let done = item.progress.map_or(0, |p| p.items_processed);
        if let Some(scalars) = &mut self.scalars {
            scalars.pass_done(epoch, item.iteration.unwrap_or(0));
        }
        let position = (epoch.saturating_sub(1)) * self.per_epoch + done;
        self.bar.set_position(position as u64);
        self.bar
            .set_message(format!("epoch {epoch}/{}", self.epochs));
        if let Some(h) = &mut self.heartbeat {
            let pass = epoch.saturating_sub(1) * self.passes + item.iteration.unwrap_or(0);
            let per_step = self.per_step.max(1);
            let (log, schedule, epochs) = (&self.log, &self.schedule, self.epochs);
            // The optimizer step this pass belongs to, and the schedule's count at its start.
            let step = pass.saturating_sub(1) / per_step;
            let calls = step * schedule.passes_per_step.max(1);
            h.beat(position as u64, (epochs * self.per_epoch) as u64, || {
                let loss = log.split("train").get(&epoch).map_or(0.0, |s| s.loss());
                format!(
                    " | epoch {epoch}/{epochs}, step {}/{}, loss {loss:.4} (epoch mean), lr {:.3e}",
                    pass / per_step,
                    schedule.total,
                    schedule.rate_at(calls),
                )
            });
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        self.bar.set_message(format!(
            "epoch {}/{} (validating)",
            item.global_progress.items_processed, self.epochs
        ));
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        if let Some(scalars) = &mut self.scalars {
            scalars.epochs_up_to(self.log.split("valid").keys().max().copied().unwrap_or(0));
        }
        Ok(())
    }
}

impl MetricsRendererEvaluation for BarRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for BarRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}
