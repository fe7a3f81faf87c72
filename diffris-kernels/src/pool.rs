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
