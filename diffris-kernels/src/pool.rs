//! The pool family: where a step's operations are issued from.
//!
//! flex runs each operation's parallel loops on rayon's global pool. An operation issued from a
//! thread outside the pool hands its work to the pool's threads and sleeps until they finish:
//! two thread wake-ups per operation, while the idle workers spin between operations. A step of
//! a large model hardly notices; the tiny profile's steps are thousands of small operations, and
//! the hand-overs took about 40% of a training step of its UNet (`bench_unet --phase train
//! --arch tiny_profile`, docs/BENCHMARKS.md). Issued from one of the pool's own threads, an
//! operation's loops start on that thread and the other threads steal from it: no hand-over.

use burn::tensor::backend::Backend;

/// Where a backend runs a whole step (a forward and its backward, or a batch's evaluation).
pub trait PoolOps: Backend {
    /// Runs `f`, a step's worth of operations, where the backend's kernels issue their parallel
    /// loops from. The default runs it here, on the calling thread; flex runs it on one of
    /// rayon's threads (already there: here).
    ///
    /// `f` must not wait on another thread that computes on the same backend (the multi-device
    /// turnstile does): that thread's work could be queued behind `f` on the pool, and with
    /// every pool thread waiting, neither would go on. Callers on several devices' threads call
    /// `f` directly instead.
    fn sd_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        f()
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor};

    #[test]
    fn flex_runs_a_step_on_a_pool_thread_and_a_nested_one_in_place() {
        assert_eq!(rayon::current_thread_index(), None, "the test's own thread");
        let (outer, inner) = Flex::sd_on_pool(|| {
            let outer = std::thread::current().id();
            let inner = Flex::sd_on_pool(|| std::thread::current().id());
            (outer, inner)
        });
        assert_ne!(outer, std::thread::current().id(), "moved to the pool");
        assert_eq!(outer, inner, "already on the pool: run in place");
        assert!(Autodiff::<Flex>::sd_on_pool(rayon::current_thread_index).is_some());
    }

    /// Where a step is issued from changes no number: the kernels split their work the same
    /// way from any thread.
    #[test]
    fn a_step_on_the_pool_computes_the_same_bits() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::random([64, 96], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<Flex, 2>::random([96, 48], Distribution::Normal(0.0, 1.0), &device);
        let step = || {
            let y = x.clone().matmul(w.clone());
            burn::tensor::activation::softmax(y, 1)
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        let here = step();
        let pooled = Flex::sd_on_pool(step);
        assert!(
            here.iter()
                .zip(&pooled)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
}
