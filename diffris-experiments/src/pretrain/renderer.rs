//! A burn-train renderer for `pretrain`: one progress bar over the run's samples and, for runs
//! nobody watches, [`Heartbeat`] lines with the step and the recent training loss.

use burn::train::LearnerSummary;
use burn::train::metric::MetricDefinition;
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use indicatif::ProgressBar;

use super::log::PretrainLog;
use crate::util::progress::Heartbeat;

pub struct PretrainRenderer {
    pub bar: ProgressBar,
    /// Samples per segment, optimizer steps per segment and in the run.
    pub segment_len: usize,
    pub every: usize,
    pub steps: usize,
    pub heartbeat: Option<Heartbeat>,
    pub log: PretrainLog,
}

impl MetricsRendererTraining for PretrainRenderer {
    fn update_train(&mut self, _state: MetricState) {}

    fn update_valid(&mut self, _state: MetricState) {}

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let segment = item.global_progress.items_processed.saturating_sub(1);
        let done = item.progress.map_or(0, |p| p.items_processed);
        let position = segment * self.segment_len + done;
        self.bar.set_position(position as u64);
        // Per pass: the step count only (the curve itself is not copied here).
        let step = self.log.steps();
        self.bar.set_message(format!("step {step}/{}", self.steps));
        if let Some(h) = &mut self.heartbeat {
            let total = (self.steps / self.every.max(1) * self.segment_len) as u64;
            let log = &self.log;
            let steps = self.steps;
            h.beat(position as u64, total, || {
                let recent = log.recent_train_mean(10);
                format!(" | step {step}/{steps}, loss {recent:.4} (mean of the last 10 steps)")
            });
        }
    }

    fn render_valid(&mut self, _item: TrainingProgress, _indicators: Vec<ProgressType>) {
        self.bar.set_message("validating");
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for PretrainRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}
}

impl MetricsRenderer for PretrainRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, _definition: MetricDefinition) {}
}
