//! `kill -9` of an `ablation --jobs N` process: its run processes stop with it (instead of
//! training on as orphans), and `--resume` continues each run from its last whole checkpoint.

#![cfg(target_os = "linux")] // finds the run processes in /proc

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ABLATION: &str = r#"(
    version: 2,
    name: "mini",
    title: "Mini ablation",
    columns: [miou, oiou, pr50],
    base: (dataset: rrsisd),
    variants: [
        (name: "off", label: "no adapter", set: (model: (adapter: (enabled: false))), paper: (oiou: 75.52, miou: 61.43)),
        (name: "full", label: "full adapter", paper: (oiou: 76.05, miou: 62.19)),
    ],
)"#;

/// The `diffris run-spec` processes writing into `results`.
fn run_processes(results: &Path) -> Vec<u32> {
    let needle = results.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.iter().any(|a| a == "run-spec") && args.iter().any(|a| a == needle))
                .then_some(pid)
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killing_the_ablation_stops_its_runs_and_resume_continues_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mini.ron"), ABLATION).unwrap();
    let results = dir.path().join("results");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["ablation", "mini", "--jobs", "2", "--epochs", "40"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(
            [
                "--batch-size",
                "4",
                "--limit-train",
                "8",
                "--limit-eval",
                "4",
                "--ablations",
                ".",
                "--results",
                results.to_str().unwrap(),
                "--cache",
                cache.path().to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut parent = Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args(args(&[]))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoints =
        |variant: &str| results.join(format!("runs/mini/{variant}/seed-0/checkpoint/model-1.mpk"));
    // Both runs have trained and checkpointed an epoch.
    wait_until(
        "both runs checkpointed epoch 1",
        Duration::from_secs(300),
        || checkpoints("off").is_file() && checkpoints("full").is_file(),
    );
    assert_eq!(run_processes(&results).len(), 2);

    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    wait_until("the run processes stopped", Duration::from_secs(10), || {
        run_processes(&results).is_empty()
    });

    // A resume continues each run from its last whole checkpoint: one more epoch, then stop.
    let last = |variant: &str| {
        diffris_experiments::training::last_checkpoint(&diffris_experiments::config::RunDir::new(
            &results, "mini", variant, 0,
        ))
        .unwrap()
    };
    let (off, full) = (last("off"), last("full"));
    let stop = (off.max(full) + 1).to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_diffris"))
        .args(args(&["--resume", "--stop-after", &stop]))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for variant in ["off", "full"] {
        let epochs: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                results.join(format!("runs/mini/{variant}/seed-0/epochs.json")),
            )
            .unwrap(),
        )
        .unwrap();
        let mut got: Vec<usize> = epochs["valid"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        got.sort();
        let expected: Vec<usize> = (1..=stop.parse().unwrap()).collect();
        assert_eq!(got, expected, "{variant}: every epoch once, up to the stop");
    }
}
