//! Running the `diffris` binary from the integration tests.
// Each test file uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The `diffris` binary of this build.
pub fn diffris() -> Command {
    Command::new(env!("CARGO_BIN_EXE_diffris"))
}

/// Its stdout and stderr together.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`: its exit code (`None`: ended by a signal) and output.
pub fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    (out.status.code(), text(&out))
}

/// Runs `cmd`: whether it succeeded, and its output.
pub fn outcome(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (out.status.success(), text(&out))
}

/// `diffris ARGS` in `cwd`, which must succeed; its output.
pub fn succeeds(args: &[&str], cwd: &Path) -> String {
    let (ok, text) = outcome(diffris().args(args).current_dir(cwd));
    assert!(ok, "diffris {args:?} failed:\n{text}");
    text
}
