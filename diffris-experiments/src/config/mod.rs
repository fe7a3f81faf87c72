//! What to run: ablation files and recipes ([`recipe`]) resolved per variant and seed
//! ([`profile`]) into a [`RunSpec`] ([`run_spec`]), and the folder a run lives in
//! ([`run_dir`]).

pub mod profile;
pub mod recipe;
pub mod run_dir;
pub mod run_spec;

pub use run_dir::RunDir;
pub use run_spec::RunSpec;
