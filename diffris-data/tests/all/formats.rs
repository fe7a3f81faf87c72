//! The three dataset readers on fixtures written in the published formats by
//! `tools/make_dataset_fixtures.py`, against the samples and masks recorded in `expected.json`.

use std::path::{Path, PathBuf};

use diffris_data::DatasetFormat;
use diffris_data::rle::BinaryMask;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(Deserialize)]
struct Expected {
    sentence: String,
    category: Option<String>,
    mask_rows: Vec<String>,
    #[serde(default)]
    image_path: Option<String>,
    #[serde(default)]
    image_file: Option<String>,
}

fn expected(dataset: &str, split: &str) -> Option<Vec<Expected>> {
    let text = std::fs::read_to_string(fixtures().join(dataset).join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    if v[split].is_null() {
        return None;
    }
    Some(serde_json::from_value(v[split].clone()).unwrap())
}

fn rows(mask: &BinaryMask) -> Vec<String> {
    mask.data
        .chunks(mask.width)
        .map(|r| r.iter().map(|&b| if b { '1' } else { '0' }).collect())
        .collect()
}

fn check(format: DatasetFormat, dataset: &str, root: &Path, split: &str) {
    let want = expected(dataset, split).unwrap();
    let got = format.read_split(root, split).unwrap();
    assert_eq!(got.len(), want.len(), "{dataset}/{split}: sample count");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.sentence, w.sentence, "{dataset}/{split}");
        if w.category.is_some() {
            assert_eq!(g.category, w.category, "{dataset}/{split} {}", g.id);
        }
        let rel = w.image_path.as_ref().or(w.image_file.as_ref()).unwrap();
        assert!(
            g.image.ends_with(rel),
            "{}: {} vs {rel}",
            g.id,
            g.image.display()
        );
        let mask = g.load_mask().unwrap();
        assert_eq!(rows(&mask), w.mask_rows, "{dataset}/{split} {}: mask", g.id);
        g.load_image().unwrap();
    }
}

#[test]
fn rrsisd_every_split() {
    let root = fixtures().join("rrsisd");
    for split in ["train", "val", "test"] {
        check(DatasetFormat::Rrsisd, "rrsisd", &root, split);
    }
}

#[test]
fn rrsisd_protocol5_pickle_with_bytes_strings_reads_the_same() {
    // Same refs pickled with protocol 5 and some strings as bytes; reuse instances and images.
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("rrsisd");
    std::fs::create_dir_all(dir.path().join("rrsisd")).unwrap();
    std::fs::copy(
        src.join("rrsisd/instances.json"),
        dir.path().join("rrsisd/instances.json"),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("rrsisd_proto5/rrsisd/refs(unc).p"),
        dir.path().join("rrsisd/refs(unc).p"),
    )
    .unwrap();
    let images = dir.path().join("images/rrsisd/JPEGImages");
    std::fs::create_dir_all(&images).unwrap();
    for e in std::fs::read_dir(src.join("images/rrsisd/JPEGImages")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), images.join(e.file_name())).unwrap();
    }
    for split in ["train", "val", "test"] {
        let a = DatasetFormat::Rrsisd.read_split(&src, split).unwrap();
        let b = DatasetFormat::Rrsisd.read_split(dir.path(), split).unwrap();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                (&x.sentence, &x.mask, &x.category),
                (&y.sentence, &y.mask, &y.category)
            );
        }
    }
}

#[test]
fn rrsisd_quirks() {
    let root = fixtures().join("rrsisd");
    let test = DatasetFormat::Rrsisd.read_split(&root, "test").unwrap();
    // `test_extra` belongs to test; the 33-px-wide image keeps its 32x32 RLE mask.
    assert!(
        test.iter()
            .any(|s| s.category.as_deref() == Some("chimney"))
    );
    let vehicle = test
        .iter()
        .find(|s| s.category.as_deref() == Some("vehicle"))
        .unwrap();
    let img = vehicle.load_image().unwrap();
    let mask = vehicle.load_mask().unwrap();
    assert_eq!((img.width(), img.height()), (33, 32));
    assert_eq!((mask.width, mask.height), (32, 32));
    // A ref with two sentences gives two samples with one mask.
    let train = DatasetFormat::Rrsisd.read_split(&root, "train").unwrap();
    let airplanes: Vec<_> = train
        .iter()
        .filter(|s| s.category.as_deref() == Some("airplane"))
        .collect();
    assert_eq!(airplanes.len(), 2);
    assert_eq!(airplanes[0].mask, airplanes[1].mask);
    assert_ne!(airplanes[0].sentence, airplanes[1].sentence);
}

#[test]
fn refsegrs_every_split_with_threshold_50() {
    let root = fixtures().join("refsegrs");
    for split in ["train", "val", "test"] {
        check(DatasetFormat::Refsegrs, "refsegrs", &root, split);
    }
}

#[test]
fn risbench_without_val_file() {
    let root = fixtures().join("risbench");
    for split in ["train", "test"] {
        check(DatasetFormat::Risbench, "risbench", &root, split);
    }
    let err = DatasetFormat::Risbench
        .read_split(&root, "val")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("output_phrase_val.txt") && err.contains("test, train"),
        "{err}"
    );
}
