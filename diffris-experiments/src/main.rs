//! The `diffris` command-line tool.

use std::process::ExitCode;

use clap::Parser;
use diffris_experiments::cli::{Cli, run};

fn main() -> ExitCode {
    diffris_experiments::allocator::retain_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
