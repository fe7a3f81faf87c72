//! Small command-line faults end as clear errors or quiet exits, never panics.

use std::io::Read;
use std::process::{Command, Stdio};

/// Output into a closed pipe (`diffris ... | head -0`): the process ends by SIGPIPE like other
/// Unix tools, not with a Rust panic.
#[cfg(unix)]
#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let ablations = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");
    // Every resolved run of a table: far more than one line, printed with `println!`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args([
            "ablation",
            "cp_adapter",
            "--dry-run",
            "--ablations",
            ablations,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is read
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status:?}: {stderr}"
    );
}

/// Output into a file that cannot take it (`diffris ... > /dev/full`): one line naming the
/// failure and status 1, not a panic.
#[cfg(target_os = "linux")]
#[test]
fn printing_into_a_full_device_is_an_error() {
    let ablations = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args([
            "ablation",
            "cp_adapter",
            "--dry-run",
            "--ablations",
            ablations,
        ])
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("error: writing to stdout: No space left on device"),
        "{stderr}"
    );
}

#[test]
fn segment_refuses_an_empty_expression() {
    let out = Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args([
            "segment", "--run", "r", "--image", "i.png", "--text", " ", "--out", "o",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--text is empty"), "{stderr}");
}

#[test]
fn data_inspect_fails_when_no_split_can_be_read() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args(["data", "inspect", "--format", "rrsisd", "--root"])
        .arg(empty.path())
        .arg("--out")
        .arg(empty.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no split of rrsisd could be read"),
        "{stderr}"
    );
}
