//! A burn-train renderer that drives one progress bar over all training iterations.

use burn::train::LearnerSummary;
use burn::train::metric::MetricDefinition;
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use indicatif::ProgressBar;

/// A progress bar over the samples of all training epochs.
pub struct BarRenderer {
    bar: ProgressBar,
    epochs: usize,
    per_epoch: usize,
}

impl BarRenderer {
    pub fn new(bar: ProgressBar, epochs: usize, per_epoch: usize) -> Self {
        Self {
            bar,
            epochs,
            per_epoch,
        }
    }
}

impl MetricsRendererTraining for BarRenderer {
    fn update_train(&mut self, _state: MetricState) {}

    fn update_valid(&mut self, _state: MetricState) {}

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let epoch = item.global_progress.items_processed;
        let done = item.progress.map_or(0, |p| p.items_processed);
        self.bar
            .set_position(((epoch.saturating_sub(1)) * self.per_epoch + done) as u64);
        self.bar
            .set_message(format!("epoch {epoch}/{}", self.epochs));
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
        Ok(())
    }
}

impl MetricsRendererEvaluation for BarRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for BarRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, _definition: MetricDefinition) {}
}
