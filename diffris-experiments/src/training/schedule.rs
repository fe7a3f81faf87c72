//! The polynomial learning-rate decay of the paper (burn-train has no polynomial scheduler).

use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// `lr = base * (1 - t / total)^power` with `t` the optimizer step (burn-train has no polynomial
/// scheduler). burn-train advances the schedule once per pass (on several devices: once per
/// round of one pass on each), so with `K` such calls per optimizer step (gradient
/// accumulation) `t` is the call count over `K`: every pass of a step, and the step itself, see
/// the same rate. Checkpoints record optimizer steps, so a run resumes on any number of devices
/// or micro-batch size.
#[derive(Clone, Debug)]
pub struct PolyLr {
    pub base: f64,
    pub power: f64,
    /// Optimizer steps of the whole run.
    pub total: usize,
    /// Schedule calls per optimizer step (passes per device).
    pub passes_per_step: usize,
    /// Calls so far.
    pub iteration: usize,
}

impl PolyLr {
    /// The rate of pass `iteration` (counted from 0 over the whole run).
    pub fn rate_at(&self, iteration: usize) -> f64 {
        let step = iteration / self.passes_per_step.max(1);
        let t = step.min(self.total) as f64 / self.total.max(1) as f64;
        self.base * (1.0 - t).powf(self.power)
    }
}

impl LrScheduler for PolyLr {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let lr = self.rate_at(self.iteration);
        self.iteration += 1;
        lr
    }

    /// Optimizer steps so far (checkpoints are written between steps).
    fn to_record<B: Backend>(&self) -> usize {
        self.iteration / self.passes_per_step.max(1)
    }

    fn load_record<B: Backend>(mut self, steps: usize) -> Self {
        self.iteration = steps * self.passes_per_step.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// base 1, power 2, 4 iterations: (1 - t/4)^2 for t = 0..4 is 1, 9/16, 1/4, 1/16, 0, and it
    /// stays 0 past the end.
    #[test]
    fn the_rate_decays_polynomially_once_per_iteration() {
        let mut s = PolyLr {
            base: 1.0,
            power: 2.0,
            total: 4,
            passes_per_step: 1,
            iteration: 0,
        };
        let got: Vec<f64> = (0..6).map(|_| s.step()).collect();
        assert_eq!(got, [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]);
    }

    #[test]
    fn with_accumulation_the_rate_changes_once_per_optimizer_step() {
        let mut s = PolyLr {
            base: 1.0,
            power: 2.0,
            total: 2,
            passes_per_step: 3,
            iteration: 0,
        };
        let got: Vec<f64> = (0..7).map(|_| s.step()).collect();
        assert_eq!(got, [1.0, 1.0, 1.0, 0.25, 0.25, 0.25, 0.0]);
    }

    #[cfg(feature = "flex")] // a record is taken for a backend type
    #[test]
    fn a_resumed_schedule_continues_where_it_stopped() {
        use burn::backend::Flex;

        let fresh = PolyLr {
            base: 1e-4,
            power: 0.9,
            total: 10,
            passes_per_step: 1,
            iteration: 0,
        };
        let mut whole = fresh.clone();
        let expected: Vec<f64> = (0..10).map(|_| whole.step()).collect();
        let mut first = fresh.clone();
        let _ = (0..3).map(|_| first.step()).count();
        let record = first.to_record::<Flex>();
        let mut resumed = fresh.load_record::<Flex>(record);
        let rest: Vec<f64> = (3..10).map(|_| resumed.step()).collect();
        assert_eq!(rest, expected[3..]);
    }

    /// A run checkpointed after 2 optimizer steps of 3 passes each resumes at step 2 on a
    /// layout of 2 passes per step (another micro-batch size or device count).
    #[cfg(feature = "flex")]
    #[test]
    fn a_checkpoint_counts_optimizer_steps_not_passes() {
        use burn::backend::Flex;

        let at = |k: usize| PolyLr {
            base: 1.0,
            power: 2.0,
            total: 4,
            passes_per_step: k,
            iteration: 0,
        };
        let mut three = at(3);
        let _ = (0..6).map(|_| three.step()).count();
        assert_eq!(three.to_record::<Flex>(), 2);
        let mut two = at(2).load_record::<Flex>(three.to_record::<Flex>());
        // (1 - 2/4)^2 for both passes of step 2, then (1 - 3/4)^2.
        let got: Vec<f64> = (0..3).map(|_| two.step()).collect();
        assert_eq!(got, [0.25, 0.25, 0.0625]);
    }
}
