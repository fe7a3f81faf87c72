//! The diffris experiment runner: backend selection, metrics, and the commands of the `diffris`
//! binary.

pub mod backend;
pub mod build_info;
pub mod cli;
pub mod commands;
pub mod metrics;
pub mod tensor_file;
