//! The diffris experiment runner.
//!
//! From an ablation file to its table: [`recipe`] reads the file, [`profile`] resolves each
//! variant and seed into a [`profile::RunSpec`], [`run`] trains and evaluates it (inputs from
//! [`inputs`] and [`frozen`], training in [`training`], scores from [`evaluate`] and
//! [`metrics`], records from [`record`]), [`parallel`] runs several at once, and [`report`]
//! writes the table and plots. [`commands`] holds the `diffris` subcommands, which share their
//! helpers through [`commands::common`]; the runner never calls into them.

pub mod allocator;
pub mod backend;
pub mod build_info;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod device_memory;
pub mod encoded;
pub mod encoded_cache;
pub mod evaluate;
pub mod explain;
pub mod fingerprint;
pub mod frozen;
pub mod half_step;
pub mod inputs;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod parallel;
pub mod plan;
pub mod png;
pub mod profile;
pub mod progress;
pub mod recipe;
pub mod record;
pub mod reload;
pub mod report;
pub mod rows;
pub mod run;
pub mod step_probe;
pub mod tensor_file;
pub mod training;
pub mod workspace;
