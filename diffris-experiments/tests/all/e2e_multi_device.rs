//! End to end through the binary: `--device flex,flex` (two workers on the CPU backend, the code
//! path of several GPUs) trains a run to exactly the numbers of one device computing the same
//! micro-batches, and records both devices.

use crate::binary;

use std::path::Path;

use diffris_experiments::records::RunResult;

const ABLATION: &str = r#"(
    version: 2,
    name: "mini",
    title: "Mini ablation",
    columns: [miou, oiou, pr50],
    base: (dataset: rrsisd),
    variants: [(name: "full", label: "full adapter", paper: (oiou: 76.05, miou: 62.19))],
)"#;

/// Trains `mini/full` in `results` on `device`; returns the result, the per-epoch metrics and
/// the run's environment record.
fn run(dir: &Path, cache: &Path, results: &str, device: &str) -> (RunResult, String, String) {
    let mut args = vec!["--device", device, "ablation", "mini", "--results", results];
    args.extend(["--micro-batch", "2", "--cache"]);
    args.push(cache.to_str().unwrap());
    args.extend([
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--limit-train",
        "12",
        "--limit-eval",
        "8",
        "--ablations",
        ".",
    ]);
    binary::succeeds(&args, dir);
    let run = dir.join(results).join("runs/mini/full/seed-0");
    let read = |f: &str| std::fs::read_to_string(run.join(f)).unwrap();
    (
        serde_json::from_str(&read("result.json")).unwrap(),
        read("metrics.csv"),
        read("env.json"),
    )
}

#[test]
fn two_cpu_workers_train_exactly_as_one_device_with_the_same_micro_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mini.ron"), ABLATION).unwrap();
    let (one, one_csv, one_env) = run(dir.path(), cache.path(), "one", "flex");
    let (two, two_csv, two_env) = run(dir.path(), cache.path(), "two", "flex,flex");
    assert_eq!(two.val, one.val);
    assert_eq!(two.test, one.test);
    assert_eq!(two.best_epoch, one.best_epoch);
    assert_eq!(
        two_csv, one_csv,
        "per-epoch training and validation metrics"
    );
    let device = |env: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(env).unwrap();
        v["device"].as_str().unwrap().to_string()
    };
    assert!(device(&two_env).starts_with("flex,flex "), "{two_env}");
    assert!(device(&one_env).starts_with("flex "), "{one_env}");
}
