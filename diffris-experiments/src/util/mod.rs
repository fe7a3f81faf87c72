//! Small tools every wing uses: hashing and digests, file locks, atomic writes, PNG, progress
//! lines, facts of the build.

pub mod atomic_file;
pub mod build_info;
pub mod cache;
pub mod lock;
pub mod png;
pub mod progress;
