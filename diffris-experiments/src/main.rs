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
    exit_on_stdout_error();
    diffris_experiments::device::allocator::retain_freed_memory();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `println!` panics when stdout fails (a full disk behind a redirect, a closed terminal). Such a
/// panic ends the process as any other error does, with one line on stderr and status 1; every
/// other panic keeps Rust's own report. (A closed pipe never gets here: SIGPIPE ends the process
/// first.)
fn exit_on_stdout_error() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if let Some(cause) = message.strip_prefix("failed printing to stdout: ") {
            eprintln!("error: writing to stdout: {cause}");
            std::process::exit(1);
        }
        report(info)
    }));
}
