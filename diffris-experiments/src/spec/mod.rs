//! What to run: ablation files and recipes ([`recipe`]) resolved per variant and seed into a
//! [`RunSpec`] ([`profile`]).

pub mod profile;
pub mod recipe;

pub use profile::RunSpec;
