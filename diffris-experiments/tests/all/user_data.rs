//! A user's dataset (`--data NAME=DIR`) under the tiny profile: the runs read DIR at the tiny
//! architecture (not SynthRS from the cache), its splits are encoded once into the cache and
//! reused by the next process, and encoded again when a file they were read from changes.
//! Weights given to the tiny profile are refused.

#![cfg(feature = "flex")]

use crate::binary;

const ABLATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");

/// Lines saying a split was encoded.
fn encoded(out: &str) -> usize {
    out.lines()
        .filter(|l| l.starts_with("encoded the "))
        .count()
}

#[test]
fn a_users_dataset_is_encoded_once_and_again_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("mydata");
    // A small dataset in RRSIS-D's layout (SynthRS writes it).
    binary::succeeds(
        &[
            "data", "synth", "--out", "mydata", "--size", "64", "--train", "8", "--val", "2",
            "--test", "2",
        ],
        d,
    );
    let root = format!("rrsisd={}", data.display());
    let run = |seed: &str| {
        binary::succeeds(
            &[
                "train",
                "cp_adapter",
                "--variant",
                "full",
                "--profile",
                "tiny",
                "--data",
                &root,
                "--seed",
                seed,
                "--batch-size",
                "4",
                "--epochs",
                "1",
                "--ablations",
                ABLATIONS,
                "--results",
                "results",
                "--cache",
                "cache",
            ],
            d,
        )
    };
    let first = run("0");
    assert_eq!(encoded(&first), 3, "train, val and test encoded:\n{first}");
    let config =
        std::fs::read_to_string(d.join("results/runs/cp_adapter/full/seed-0/config.ron")).unwrap();
    assert!(
        config.contains(&format!("data_root: \"{}\"", data.display()))
            && config.contains("dataset: rrsisd")
            && config.contains("synth: None"),
        "the run reads the given dataset:\n{config}"
    );
    // Another process (another seed) reads the three encodings from the cache.
    let second = run("1");
    assert_eq!(encoded(&second), 0, "{second}");
    // So does `eval` of a finished run on its test split.
    let eval = binary::succeeds(
        &[
            "eval",
            "--run",
            "results/runs/cp_adapter/full/seed-0",
            "--cache",
            "cache",
        ],
        d,
    );
    assert_eq!(encoded(&eval), 0, "{eval}");
    assert!(eval.contains("per-sample scores"), "{eval}");
    // A changed annotation file (here only its modification time) makes new encodings.
    let refs = data.join("rrsisd/refs(unc).p");
    let later =
        std::fs::metadata(&refs).unwrap().modified().unwrap() + std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&refs)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let third = run("2");
    assert_eq!(encoded(&third), 3, "{third}");
}

#[test]
fn the_tiny_profile_refuses_weights_it_would_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = binary::outcome(binary::diffris().current_dir(dir.path()).args([
        "train",
        "cp_adapter",
        "--profile",
        "tiny",
        "--sd",
        "sd15=/weights/v1-5.safetensors",
        "--ablations",
        ABLATIONS,
        "--dry-run",
    ]));
    assert!(!ok, "{out}");
    assert!(
        out.contains("the tiny profile draws random weights") && out.contains("`sd15` is given"),
        "{out}"
    );
}
