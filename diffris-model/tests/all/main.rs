//! The integration tests of diffris-model, one module per subject, in one binary (one link of
//! Burn and the crate instead of one per file).

mod common;

mod ckpt_archive;
mod diffris_model;
mod explain;
mod frozen_ops;
mod half_precision;
mod schedule;
mod sd15_keys;
mod sd_ema;
mod sd_gradients;
mod sd_parity;
mod sd_save;
mod sd_strict;
mod vae_decoder;

/// Burn's flex backend keeps one random stream per process: `Backend::seed` sets it and every
/// random tensor draws from it. The tests that draw from it hold this lock for their whole
/// length, so that a test's seeded draws are the ones it would get in a process of its own
/// (with the tests of all files in one binary, another test's draws could otherwise fall
/// between them).
pub fn burn_rng() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
