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
        out.contains("the tiny profile draws random weights") && out.contains("`sd15` ("),
        "{out}"
    );
}

/// A dataset in RISBench's layout without a validation split (as its public download comes):
/// refused before anything is encoded, naming the missing file and the fallback; with
/// `--val-from-train N` whole images of at least N training expressions become the validation
/// split, the rest trains, and the run's config records it.
#[test]
fn a_dataset_without_a_val_split_validates_on_expressions_held_out_of_train() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("ris");
    std::fs::create_dir_all(data.join("img_rgb")).unwrap();
    std::fs::create_dir_all(data.join("mask")).unwrap();
    let mut train = String::new();
    for i in 0..6u32 {
        let name = format!("{i:03}.png");
        let rgb = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, (i * 40) as u8])
        });
        rgb.save(data.join("img_rgb").join(&name)).unwrap();
        let mask = image::GrayImage::from_fn(32, 32, |x, y| {
            image::Luma([if x / 8 == i % 4 && y >= 8 { 255 } else { 0 }])
        });
        mask.save(data.join("mask").join(&name)).unwrap();
        // Two expressions per image.
        train.push_str(&format!(
            "{name} the stripe number {i}\n{name} a bright band {i}\n"
        ));
    }
    std::fs::write(data.join("output_phrase_train.txt"), train).unwrap();
    std::fs::write(
        data.join("output_phrase_test.txt"),
        "000.png the first stripe\n003.png the fourth stripe\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("abl")).unwrap();
    std::fs::write(
        d.join("abl/ris.ron"),
        r#"(version: 2, name: "ris", title: "T", columns: [miou],
            base: (dataset: risbench), variants: [(name: "a", label: "A")])"#,
    )
    .unwrap();
    let root = format!("risbench={}", data.display());
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "ris",
            "--ablations",
            "abl",
            "--profile",
            "tiny",
            "--data",
            &root,
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--results",
            "results",
            "--cache",
            "cache",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let (ok, out) = binary::outcome(binary::diffris().current_dir(d).args(args(&[])));
    assert!(!ok, "{out}");
    assert!(
        out.contains("has no val split")
            && out.contains("output_phrase_val.txt does not exist")
            && out.contains("--val-from-train N"),
        "{out}"
    );
    assert_eq!(encoded(&out), 0, "refused before encoding:\n{out}");

    let out = binary::succeeds(
        &args(&["--val-from-train", "3"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        d,
    );
    let samples = |split: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("encoded the {split} split (")))
            .unwrap_or_else(|| panic!("no {split} encoding in:\n{out}"));
        line.split('(')
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Whole images of two expressions each: at least 3 held out means 2 images, 4 expressions.
    assert_eq!(
        (samples("train"), samples("val"), samples("test")),
        (8, 4, 2),
        "{out}"
    );
    let config = std::fs::read_to_string(d.join("results/runs/ris/a/seed-0/config.ron")).unwrap();
    assert!(config.contains("val_from_train: Some(3)"), "{config}");
}
