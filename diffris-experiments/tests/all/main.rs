//! The integration tests of diffris-experiments, one module per subject, in one binary (one link
//! of Burn and the crate instead of one per file). `encoded_rss` is a binary of its own: it
//! measures its process's peak memory.

mod binary;
// Used by the modules that run on flex only.
#[cfg(feature = "flex")]
mod common;

mod ablation_files;
mod accumulation;
mod backend_step;
mod bad_input_cli;
mod cli_features;
mod cli_robust;
mod concurrent;
mod corpus;
mod divergence;
mod e2e_ablation;
mod e2e_kill;
mod e2e_multi_device;
mod encode_threads;
mod explain_backends;
mod failed_pass;
mod full_disk;
mod memory_fit;
mod multi_device;
mod pretrain;
mod random_weights;
mod readme;
mod score_strict;
mod set_flag;
mod tiny_latent_scale;
mod user_data;
mod weight_decay;

/// Burn's flex backend keeps one random stream per process: `Backend::seed` sets it and every
/// random tensor draws from it. The tests that draw from it hold this lock for their whole
/// length, so that a test's seeded draws are the ones it would get in a process of its own
/// (with the tests of all files in one binary, another test's draws could otherwise fall
/// between them).
pub fn burn_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
