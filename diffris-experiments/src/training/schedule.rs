//! The polynomial learning-rate decay of the paper (burn-train has no polynomial scheduler).

use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// `lr = base * (1 - t / total)^power`, stepped once per iteration (burn-train has no
/// polynomial scheduler).
#[derive(Clone, Debug)]
pub struct PolyLr {
    pub base: f64,
    pub power: f64,
    pub total: usize,
    pub iteration: usize,
}

impl LrScheduler for PolyLr {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let t = self.iteration.min(self.total) as f64 / self.total.max(1) as f64;
        self.iteration += 1;
        self.base * (1.0 - t).powf(self.power)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.iteration
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.iteration = record;
        self
    }
}
