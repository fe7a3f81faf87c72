//! Several CUDA GPUs through Burn's distributed data parallel (`--data-parallel ddp`, in builds
//! with the `ddp` feature).
//!
//! burn-train 0.21's `ExecutionStrategy::DistributedDataParallel` starts one worker thread per
//! device. Each forks the learner (model, optimizer, schedule) to its device once, marks the
//! model's parameters as distributed, and trains on its part of the loader: the same parts
//! [`super::loader::EpochLoader::slice`] gives the ordered loop, so device `i` runs passes
//! `i, i + D, ...` of the epoch's plan. Every backward pass ends in an all-reduce of the
//! trainable parameters' gradients over the devices (NCCL, in cubecl's CUDA runtime), and each
//! worker then accumulates and steps its own optimizer with the same summed gradients. The first
//! device validates, logs and writes checkpoints.
//!
//! What diffris relies on, and how it holds here:
//! - **The sum.** Each pass's loss is already weighted by its share of the whole optimizer batch
//!   (see [`super::loader::micro_batches`]), so the all-reduce *sums* (not averages): the summed
//!   gradients are those of the batch's mean loss, as on one device.
//! - **The schedule.** Every worker calls `lr_step` once per pass for each of the D devices, on
//!   its own copy of the schedule, so the schedule counts `D * K` calls per optimizer step
//!   ([`schedule_calls_per_step`]).
//! - **The random draws.** The workers' forwards wait for their turn in the epoch's plan
//!   ([`crate::device::turnstile`]), and only the loader part holding the plan's first pass reseeds the
//!   process-wide RNG, so the dropout and Gumbel draws come in one device's order.
//! - **Batch-norm statistics.** Burn's running state is shared by the copies of a module (one
//!   `Arc`); every update happens inside a forward, in turn, so the statistics are those one
//!   device computes over the same passes.
//!
//! - **Stopping.** burn-train's workers each check the stop flag after every pass; a stop
//!   raised mid-pass could end one worker a pass before another, which would then wait forever
//!   for its turn or its all-reduce. The metrics' stops (divergence, a failed write) are
//!   therefore requests that the workers turn into a stop together, at a barrier before each
//!   pass ([`crate::device::turnstile::Rounds`]), so all end after the same pass.
//!
//! Not bit-identical to one device: NCCL sums the devices' gradients in its own order, and the
//! workers report their training losses to the metrics in arrival order.

use crate::device::backend::DataParallel;

/// How often burn-train steps the learning-rate schedule per optimizer step, with `devices`
/// devices each running `per_device` passes per step: once per pass on one device, once per
/// round of the devices in the ordered loop ([`super::multi_device`]), and `devices` times per pass on
/// every DDP worker.
pub fn schedule_calls_per_step(parallel: DataParallel, devices: usize, per_device: usize) -> usize {
    match parallel {
        DataParallel::Ddp if devices > 1 => devices * per_device,
        _ => per_device,
    }
}

/// burn-train's DDP strategy over `devices`, the gradients summed.
#[cfg(feature = "ddp")]
pub fn strategy<LC>(
    devices: Vec<burn::tensor::Device<LC::Backend>>,
) -> burn::train::TrainingStrategy<LC>
where
    LC: burn::train::LearningComponentsTypes,
    LC::Backend: burn::tensor::backend::distributed::DistributedBackend,
{
    use burn::tensor::backend::distributed::{DistributedConfig, ReduceOperation};
    burn::train::TrainingStrategy::Default(burn::train::ExecutionStrategy::ddp(
        devices,
        DistributedConfig {
            all_reduce_op: ReduceOperation::Sum,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::schedule::PolyLr;

    /// Two devices with two passes each per step: the ordered loop steps the schedule twice per
    /// optimizer step (once per round), each DDP worker four times (two devices per pass); both
    /// give each step's passes one rate, and the same rates in the same steps.
    #[test]
    fn both_strategies_change_the_rate_once_per_optimizer_step() {
        let rates = |parallel| {
            let calls = schedule_calls_per_step(parallel, 2, 2);
            let mut s = PolyLr {
                base: 1.0,
                power: 2.0,
                total: 4,
                passes_per_step: calls,
                iteration: 0,
            };
            use burn::optim::lr_scheduler::LrScheduler;
            let per_call: Vec<f64> = (0..4 * calls).map(|_| s.step()).collect();
            (calls, per_call)
        };
        let (ordered_calls, ordered) = rates(DataParallel::Ordered);
        let (ddp_calls, ddp) = rates(DataParallel::Ddp);
        assert_eq!((ordered_calls, ddp_calls), (2, 4));
        let steps = |v: &[f64], k: usize| -> Vec<f64> {
            v.chunks(k)
                .map(|c| {
                    assert!(c.iter().all(|r| *r == c[0]), "one rate per step: {c:?}");
                    c[0]
                })
                .collect()
        };
        // (1 - t/4)^2 for the optimizer steps t = 0, 1, 2, 3 (exact in binary).
        let want = [1.0, 0.5625, 0.25, 0.0625];
        assert_eq!(steps(&ordered, ordered_calls), want);
        assert_eq!(steps(&ddp, ddp_calls), want);
        // One device: the same count whatever the flag says.
        assert_eq!(schedule_calls_per_step(DataParallel::Ddp, 1, 3), 3);
    }
}
