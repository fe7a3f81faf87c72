//! Two diffris processes at once: on one empty cache both runs succeed (one writes each entry,
//! the other waits and reuses it; before the cache locks the second failed with "Directory not
//! empty" and left a `.partial-PID` folder), and a run directory another process is training
//! is refused with a message naming that process, touching nothing.

use crate::binary;

use std::path::Path;
use std::process::{Command, Stdio};

fn train(results: &Path, cache: &Path) -> Command {
    let ablations = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");
    let mut cmd = binary::diffris();
    cmd.args([
        "train",
        "cp_adapter",
        "--variant",
        "full",
        "--ablations",
        ablations,
    ])
    .args(["--epochs", "1", "--limit-train", "8", "--limit-eval", "4"])
    .arg("--results")
    .arg(results)
    .arg("--cache")
    .arg(cache);
    cmd
}

#[test]
fn two_first_runs_on_an_empty_cache_both_succeed() {
    let cache = tempfile::tempdir().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = train(a.path(), cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = train(b.path(), cache.path()).output().unwrap();
    let first = first.wait_with_output().unwrap();
    for out in [&first, &second] {
        assert!(out.status.success(), "{}", binary::text(out));
    }
    // Nothing half-made stays in the cache, and each entry was made once.
    let mut leftovers = vec![];
    for dir in [cache.path().to_path_buf(), cache.path().join("sd-random")] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".partial") || name.contains(".tmp-") {
                leftovers.push(name);
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let both = format!("{}{}", binary::text(&first), binary::text(&second));
    assert_eq!(
        both.matches("generated SynthRS into").count(),
        1,
        "one process generates the set: {both}"
    );
    assert_eq!(
        both.matches("encoded the train split").count(),
        1,
        "one process encodes the split: {both}"
    );
    // Both trained on the same inputs with the same seed.
    let result = |d: &Path| -> serde_json::Value {
        let text =
            std::fs::read_to_string(d.join("runs/cp_adapter/full/seed-0/result.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    assert_eq!(result(a.path())["test"], result(b.path())["test"]);
}

#[test]
fn a_run_directory_in_use_is_refused_naming_its_process() {
    let cache = tempfile::tempdir().unwrap();
    let results = tempfile::tempdir().unwrap();
    let runs = results.path().join("runs/cp_adapter/full");
    std::fs::create_dir_all(&runs).unwrap();
    // This test process plays the one training it: it holds the run's lock.
    let lock = std::fs::File::create(runs.join(".seed-0.lock")).unwrap();
    lock.lock().unwrap();
    std::fs::write(runs.join(".seed-0.lock"), std::process::id().to_string()).unwrap();
    let out = train(results.path(), cache.path()).output().unwrap();
    assert!(!out.status.success());
    let msg = binary::text(&out);
    assert!(
        msg.contains("seed-0 is being trained by process ")
            && msg.contains(&std::process::id().to_string()),
        "{msg}"
    );
    assert!(!runs.join("seed-0").exists(), "nothing written: {msg}");

    // Once it lets go, the run goes ahead.
    drop(lock);
    let out = train(results.path(), cache.path()).output().unwrap();
    assert!(out.status.success(), "{}", binary::text(&out));
}
