//! The diffris experiment runner: backend selection, metrics, and the commands of the `diffris`
//! binary.

pub mod allocator;
pub mod backend;
pub mod build_info;
pub mod cli;
pub mod commands;
pub mod curves;
pub mod encoded;
pub mod encoded_cache;
pub mod evaluate;
pub mod metrics;
pub mod parallel;
pub mod plots;
pub mod profile;
pub mod recipe;
pub mod run;
pub mod step_probe;
pub mod tables;
pub mod tensor_file;
pub mod trained;
pub mod training;
