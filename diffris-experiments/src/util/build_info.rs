//! What this binary was built from; recorded in every run directory.

/// This crate's version.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Burn version in Cargo.lock.
pub const BURN_VERSION: &str = env!("DIFFRIS_BURN_VERSION");
/// `git rev-parse --short=12 HEAD` at build time, `-dirty` when tracked files had changes.
pub const GIT_REVISION: &str = env!("DIFFRIS_GIT_REVISION");
/// A digest of the sources that decide what the frozen encoders compute (the model and data
/// crates, the encoding step, Cargo.lock), taken at build time: part of the encoded-split cache's
/// key, so a cache written by a build that computed otherwise is not reused.
pub const ENCODER_SOURCES: &str = env!("DIFFRIS_ENCODER_SOURCES");
