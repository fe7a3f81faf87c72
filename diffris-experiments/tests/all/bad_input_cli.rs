//! A corpus of bad inputs given to the binary as a user would: each must end with a failing
//! exit status (not a signal), no panic, and an error that names what is wrong (the file, the
//! field, the flag). The cases that start a run also check that the failure leaves nothing that
//! blocks a corrected rerun.
//!
//! Inputs that need no trained run are the corpus `tests/corpus/bad_inputs.ron` (run by
//! `corpus.rs`); these cases need a run, several commands or a look at what is left behind.
//! Further cases live next to the code they exercise: dataset files and images in
//! `diffris-data/tests/bad_input.rs`, checkpoints in `diffris-model/tests/sd_strict.rs` and
//! `ckpt_archive.rs`, `score` in `score_strict.rs`, full disks in `full_disk.rs`, concurrent
//! processes in `concurrent.rs`, kills in `e2e_kill.rs`, divergence in `divergence.rs`.

use crate::binary;

use std::path::Path;

const ABLATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ablations");
/// A diffusers folder of the tiny architecture (not the paper profile's).
const SD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../diffris-model/tests/fixtures/sd_tiny/diffusers"
);

/// A folder with the `config.json` files of an SD-1.5 diffusers folder and no weights: enough
/// for the paper profile's checks, since the data errors come before the weights are read.
fn sd15_configs(dir: &Path) -> String {
    let sd = dir.join("sd15");
    for (folder, config) in diffris_model::sd::SdConfig::sd15().diffusers_configs() {
        std::fs::create_dir_all(sd.join(folder)).unwrap();
        std::fs::write(sd.join(folder).join("config.json"), config.to_string()).unwrap();
    }
    format!("sd15={}", sd.display())
}

const RECIPE: &str = r#"(
    version: 2,
    name: "NAME",
    title: "T",
    columns: [miou],
    base: (dataset: rrsisd, BASE),
    variants: [(name: "a", label: "A")],
)"#;

/// Runs the binary in `dir`; returns (exit code, stdout + stderr).
fn diffris(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    binary::run(binary::diffris().current_dir(dir).args(args))
}

/// The command fails cleanly with an error containing every one of `expected`.
fn refused(dir: &Path, args: &[&str], expected: &[&str]) -> String {
    let (code, text) = diffris(dir, args);
    let case = args.join(" ");
    assert!(!text.contains("panicked"), "{case}: a panic:\n{text}");
    assert!(
        code.is_some_and(|c| c != 0),
        "{case}: exit {code:?}, expected a failure:\n{text}"
    );
    for e in expected {
        assert!(text.contains(e), "{case}: no `{e}` in:\n{text}");
    }
    text
}

/// `train cp_adapter` on 8 training and 4 evaluation samples of the tiny profile, writing to
/// `results` with the cache `cache`, then `extra`.
fn small_train(cache: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "train",
        "cp_adapter",
        "--ablations",
        ABLATIONS,
        "--limit-train",
        "8",
        "--limit-eval",
        "4",
        "--results",
        "results",
        "--cache",
        cache.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    a.into_iter().map(String::from).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A run whose data cannot be read fails naming the file once (not the OS error twice), and
/// leaves no directory that makes a rerun refuse with "holds an unfinished run".
#[test]
fn a_run_on_unreadable_data_fails_and_can_be_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("empty")).unwrap();
    let sd = sd15_configs(d);
    let args = [
        "train",
        "cp_adapter",
        "--ablations",
        ABLATIONS,
        "--profile",
        "paper",
        "--data",
        "rrsisd=empty",
        "--sd",
        &sd,
        "--results",
        "results",
    ];
    for attempt in 0..2 {
        let text = refused(d, &args, &["empty/rrsisd/refs(unc).p"]);
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "attempt {attempt}: the cause once:\n{text}"
        );
        assert!(
            !text.contains("unfinished run"),
            "attempt {attempt}:\n{text}"
        );
    }
}

/// A damaged epoch record or config in a run directory is an error naming the file.
#[test]
fn damaged_run_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let train = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["--epochs", "2"];
        a.extend_from_slice(extra);
        small_train(&cache, &a)
    };
    let (code, text) = diffris(d, &strs(&train(&["--stop-after", "1"])));
    assert_eq!(code, Some(0), "{text}");
    let run = d.join("results/runs/cp_adapter/none/seed-0");
    std::fs::write(run.join("epochs.json"), "{\"train\": {\"1\": ").unwrap();
    refused(
        d,
        &strs(&train(&["--resume"])),
        &["epochs.json", "--restart"],
    );

    std::fs::write(run.join("config.ron"), "(ablation: \"cp_adapter\",").unwrap();
    refused(
        d,
        &[
            "eval",
            "--run",
            run.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
        ],
        &["config.ron:1:"],
    );
}

/// A name that would lead out of `--results` is refused where it is read, and a folder at a run's
/// path that diffris did not make is never deleted, with or without `--restart`.
#[test]
fn paths_stay_inside_results_and_foreign_folders_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("abl")).unwrap();
    for (file, name) in [
        ("up", "../../escape"),
        ("abs", "/tmp/escape"),
        ("dot", ".."),
    ] {
        let text = RECIPE
            .replace("NAME", name)
            .replace("BASE", "train: (epochs: 1)");
        std::fs::write(d.join("abl").join(format!("{file}.ron")), text).unwrap();
        refused(
            d,
            &["ablation", file, "--ablations", "abl", "--dry-run"],
            &[&format!("ablation name `{name}` must be"), "abl/"],
        );
    }
    assert!(!d.join("escape").exists() && !d.parent().unwrap().join("escape").exists());

    // Someone's folder at the first run's path: left whole, whatever the flags.
    let run = d.join("results/runs/cp_adapter/none/seed-0");
    std::fs::create_dir_all(run.join("train")).unwrap();
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let cache = d.join("cache");
    for extra in [None, Some("--restart")] {
        let mut args = vec![
            "train",
            "cp_adapter",
            "--ablations",
            ABLATIONS,
            "--results",
            "results",
            "--cache",
            cache.to_str().unwrap(),
        ];
        args.extend(extra);
        refused(
            d,
            &args,
            &["cp_adapter/none/seed-0", "`notes.txt`", "left as it is"],
        );
        assert_eq!(
            std::fs::read_to_string(run.join("notes.txt")).unwrap(),
            "mine"
        );
    }
}

/// How a batch is split into passes (devices, micro-batches) changes a run's numbers, so a run
/// resumes only with the split it started with, a reused run and a table whose seeds were
/// trained with different splits say so.
#[test]
fn the_pass_split_is_recorded_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache = d.join("cache");
    let train = |seed: &str, device: &str, extra: &[&str]| {
        let mut a = vec!["--variant", "none", "--seed", seed, "--device", device];
        a.extend_from_slice(extra);
        small_train(&cache, &a)
    };
    // The tiny profile's batch of 8: one pass on one device, a pass of 4 on each of two.
    let (code, text) = diffris(d, &strs(&train("0", "flex,flex", &["--epochs", "1"])));
    assert_eq!(code, Some(0), "{text}");
    let env =
        std::fs::read_to_string(d.join("results/runs/cp_adapter/none/seed-0/env.json")).unwrap();
    assert!(env.contains("\"passes\": [\n    4,\n    4\n  ]"), "{env}");
    let (code, text) = diffris(d, &strs(&train("1", "flex", &["--epochs", "1"])));
    assert_eq!(code, Some(0), "{text}");
    let table = std::fs::read_to_string(d.join("results/cp_adapter/table.md")).unwrap();
    assert!(
        table.contains("its seeds were trained differently")
            && table.contains("seed 0: revision")
            && table.contains("passes [4, 4] (ordered); seed 1: revision"),
        "{table}"
    );
    // Reused on one device: said.
    let (code, text) = diffris(d, &strs(&train("0", "flex", &["--epochs", "1"])));
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("reused, trained with passes [4, 4] (ordered) (this command: passes [8])"),
        "{text}"
    );
    // Started on two devices, resumed on one: refused.
    let two = train("2", "flex,flex", &["--epochs", "2", "--stop-after", "1"]);
    let (code, text) = diffris(d, &strs(&two));
    assert_eq!(code, Some(0), "{text}");
    refused(
        d,
        &strs(&train("2", "flex", &["--epochs", "2", "--resume"])),
        &[
            "was started with passes [4, 4] (ordered), and would continue with passes [8]",
            "--restart",
        ],
    );
    let (code, text) = diffris(
        d,
        &strs(&train("2", "flex,flex", &["--epochs", "2", "--resume"])),
    );
    assert_eq!(code, Some(0), "the same split resumes:\n{text}");

    // A copy of a seed's folder under another spelling is not another seed.
    let runs = d.join("results/runs/cp_adapter/none");
    std::fs::create_dir(runs.join("seed-00")).unwrap();
    for f in ["config.ron", "env.json", "result.json"] {
        std::fs::copy(runs.join("seed-0").join(f), runs.join("seed-00").join(f)).unwrap();
    }
    let (code, text) = diffris(d, &strs(&train("1", "flex", &["--epochs", "1"])));
    assert_eq!(code, Some(0), "{text}");
    let csv = std::fs::read_to_string(d.join("results/cp_adapter/table.csv")).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("none,\"w/o CP-adapter\",2,0,")),
        "seeds 0 and 1 (seed 2 trained 2 epochs, another config):\n{csv}"
    );
}

/// `data inspect` applies training's rule: a mask must cover its image pixel for pixel.
#[test]
fn inspect_refuses_a_mask_of_another_size_than_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, text) = diffris(
        d,
        &[
            "data", "synth", "--out", "ds", "--size", "32", "--train", "2", "--val", "1", "--test",
            "1",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    let inspect = [
        "data",
        "inspect",
        "--format",
        "rrsisd",
        "--root",
        "ds",
        "--splits",
        "train",
        "--overlays",
        "100",
        "--out",
        "ov",
    ];
    let (code, text) = diffris(d, &inspect);
    assert_eq!(code, Some(0), "{text}");
    // Every image of the set shrunk to 16x16 (its annotations still describe 32x32).
    let images = d.join("ds/images/rrsisd/JPEGImages");
    for f in std::fs::read_dir(&images).unwrap() {
        let p = f.unwrap().path();
        image::RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3]))
            .save(&p)
            .unwrap();
    }
    refused(
        d,
        &inspect,
        &["its mask is 32x32", "is 16x16", "JPEGImages"],
    );
}

/// The paper profile reads SD-1.5: a diffusers folder of another architecture given as its
/// weights is refused before anything runs (also for `--dry-run`), naming what differs.
#[test]
fn weights_of_another_architecture_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("data")).unwrap();
    let sd = format!("sd15={SD}");
    refused(
        d,
        &[
            "train",
            "cp_adapter",
            "--ablations",
            ABLATIONS,
            "--profile",
            "paper",
            "--data",
            "rrsisd=data",
            "--sd",
            &sd,
            "--dry-run",
        ],
        &[
            "are not of the architecture the run is configured with",
            "unet.block_out_channels",
            "sd_tiny/diffusers",
        ],
    );
}

/// Every output path is checked before the work that fills it: an output under a regular file
/// fails at once, naming the path (not after a whole evaluation).
#[test]
fn output_paths_are_checked_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("file"), "not a folder").unwrap();
    let cases: [&[&str]; 4] = [
        &["eval", "--run", "r", "--save-masks", "file/masks"],
        &["figures", "--run", "r", "--out", "file/fig.png"],
        &[
            "segment", "--run", "r", "--image", "i.png", "--text", "x", "--out", "file/o",
        ],
        &[
            "explain", "--run", "r", "--image", "i.png", "--text", "x", "--out", "file/o",
        ],
    ];
    for args in cases {
        refused(d, args, &["file/"]);
    }
    assert!(!d.join("r").exists(), "nothing created for the missing run");
}

/// A finished run's results rest on its config and weights: `result.json` records their digests,
/// and a file changed since (a flipped byte, an edit) is refused where the run is read again.
#[test]
fn a_finished_runs_files_are_checked_against_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cache_dir = d.join("cache");
    let cache = cache_dir.to_str().unwrap();
    let args = small_train(&cache_dir, &["--variant", "none", "--epochs", "1"]);
    let (code, text) = diffris(d, &strs(&args));
    assert_eq!(code, Some(0), "{text}");
    let run = d.join("results/runs/cp_adapter/none/seed-0");
    let result = std::fs::read_to_string(run.join("result.json")).unwrap();
    assert!(
        result.contains("\"model.safetensors\": \"fnv1a64:"),
        "{result}"
    );
    let eval = ["eval", "--run", run.to_str().unwrap(), "--cache", cache];
    let (code, text) = diffris(d, &eval);
    assert_eq!(code, Some(0), "{text}");

    for file in ["model.safetensors", "config.ron"] {
        let path = run.join(file);
        let original = std::fs::read(&path).unwrap();
        let mut damaged = original.clone();
        let last = damaged.len() - 2;
        damaged[last] ^= 0x01; // same size, one bit
        std::fs::write(&path, &damaged).unwrap();
        refused(
            d,
            &eval,
            &[
                &format!("{file} changed after the run finished"),
                "--restart",
            ],
        );
        std::fs::write(&path, &original).unwrap();
    }
    let (code, text) = diffris(d, &eval);
    assert_eq!(code, Some(0), "restored:\n{text}");

    // Asked again with another config, the ended run is named as such (not "unfinished").
    let other = small_train(&cache_dir, &["--variant", "none", "--epochs", "2"]);
    let text = refused(
        d,
        &strs(&other),
        &["holds a run that has ended", "another config", "--restart"],
    );
    assert!(!text.contains("unfinished"), "{text}");
    // Without its env.json, the random weights it read cannot be found: said so.
    std::fs::remove_file(run.join("env.json")).unwrap();
    refused(d, &eval, &["env.json is missing", "--restart"]);
}
