//! The `diffris` command-line tool.

use std::process::ExitCode;

use clap::Parser;
use diffris_experiments::cli::{Cli, run};

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`diffris ... | head -1`) made
    // `println!` panic; with the default action the process ends quietly, as Unix tools do.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    diffris_experiments::device::allocator::retain_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
