//! The diffris experiment runner, in wings that each build on the ones listed before them:
//!
//! - [`util`]: hashing, locks, atomic files, PNG, progress lines, build facts.
//! - [`device`]: backends and devices, their memory, the order of passes over several devices.
//! - [`spec`]: ablation files and recipes ([`spec::recipe`]), resolved into a [`spec::RunSpec`]
//!   per variant and seed ([`spec::profile`]).
//! - [`inputs`]: the frozen SD stack, and splits encoded by it and cached on disk.
//! - [`eval`]: the metrics and the evaluation of a model on a split.
//! - [`training`]: training on burn-train's supervised learner, on one device or several.
//! - [`plan`]: memory estimates and the plan of a run on its devices.
//! - [`runner`]: a run from its spec to its records ([`runner::run_dir`]), several at once, and
//!   the ablation driver.
//! - [`diagnostics`]: one training step measured or compared across backends.
//! - [`report`] (tables and plots) and [`explain`] (attribution maps) read what runs wrote.
//! - [`commands`] and [`cli`]: the `diffris` subcommands, each its arguments and one call.

pub mod cli;
pub mod commands;
pub mod device;
pub mod diagnostics;
pub mod eval;
pub mod explain;
pub mod inputs;
pub mod plan;
pub mod report;
pub mod runner;
pub mod spec;
pub mod training;
pub mod util;
