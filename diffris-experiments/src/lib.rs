//! The diffris experiment runner, in wings that each build on the ones listed before them:
//!
//! - [`util`]: hashing, locks, atomic files, PNG, progress lines, build facts.
//! - [`device`]: backends and devices, their memory, the order of passes over several devices.
//! - [`config`]: ablation files and recipes ([`config::recipe`]), resolved per variant and seed
//!   ([`config::profile`]) into a [`config::RunSpec`], and the folder a run lives in
//!   ([`config::RunDir`]).
//! - [`inputs`]: the frozen SD stack, and splits encoded by it and cached on disk.
//! - [`eval`]: the metrics and the evaluation of a model on a split.
//! - [`training`]: training on burn-train's supervised learner, on one device or several.
//! - [`plan`]: memory estimates and the plan of a run on its devices.
//! - [`records`]: what a run writes besides its config (how it trained, how it ended) and the
//!   finished run read back; the folder itself is [`config::RunDir`].
//! - [`report`]: tables and plots from the records of an ablation's runs.
//! - [`runner`]: a run from its spec to its records, several at once, the ablation driver, and
//!   a finished run's predictions.
//! - [`diagnostics`]: one training step measured or compared across backends.
//! - [`explain`]: attribution maps of a finished run.
//! - [`commands`] and [`cli`]: the `diffris` subcommands, each its arguments and one call.

pub mod cli;
pub mod commands;
pub mod config;
pub mod device;
pub mod diagnostics;
pub mod eval;
pub mod explain;
pub mod inputs;
pub mod plan;
pub mod pretrain;
pub mod records;
pub mod report;
pub mod runner;
pub mod training;
pub mod util;
