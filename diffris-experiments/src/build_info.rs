//! What this binary was built from; recorded in every run directory.

/// This crate's version.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Burn version in Cargo.lock.
pub const BURN_VERSION: &str = env!("DIFFRIS_BURN_VERSION");
/// `git rev-parse --short=12 HEAD` at build time, `-dirty` when tracked files had changes.
pub const GIT_REVISION: &str = env!("DIFFRIS_GIT_REVISION");
