//! One module per subcommand.

pub mod ablation;
pub mod bounds;
pub mod data;
pub mod doctor;
pub mod eval;
pub mod explain;
pub mod features;
pub mod figures;
pub mod info;
pub mod init_sd;
pub mod pretrain;
pub mod run_args;
pub mod run_spec;
pub mod sample;
pub mod score;
pub mod segment;
pub mod tables;
pub mod tokenize;
pub mod train;
