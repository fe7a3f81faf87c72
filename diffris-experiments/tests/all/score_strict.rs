//! `diffris score` scores exactly what it is given, or refuses it with the file's name: the
//! ground truth itself scores 100 under both protocols; masks of another size, 16-bit or colour
//! images and masks holding values other than 0 and 255 are errors (they used to be resized or
//! thresholded without a word: a 1x1 white mask scored mIoU 50).

use crate::binary;

use std::path::Path;

use diffris_data::DatasetFormat;
use diffris_data::synth::{SynthConfig, write};
use image::{GrayImage, ImageBuffer, Luma, Rgb};

/// A small SynthRS set (RRSIS-D layout) and its test split's ground-truth masks.
fn dataset(root: &Path) -> Vec<diffris_data::rle::BinaryMask> {
    write(
        root,
        &SynthConfig {
            image_size: 32,
            train: 2,
            val: 2,
            test: 3,
            ..SynthConfig::default()
        },
    )
    .unwrap();
    DatasetFormat::Rrsisd
        .read_split(root, "test")
        .unwrap()
        .iter()
        .map(|s| s.load_mask().unwrap())
        .collect()
}

fn gray(m: &diffris_data::rle::BinaryMask) -> GrayImage {
    GrayImage::from_fn(m.width as u32, m.height as u32, |x, y| {
        Luma([if m.data[y as usize * m.width + x as usize] {
            255
        } else {
            0
        }])
    })
}

/// `diffris score` on `pred`: (success, stdout + stderr).
fn score(root: &Path, pred: &Path, extra: &[&str]) -> (bool, String) {
    binary::outcome(
        binary::diffris()
            .args(["score", "--format", "rrsisd", "--split", "test", "--root"])
            .arg(root)
            .arg("--pred")
            .arg(pred)
            .args(extra),
    )
}

#[test]
fn the_ground_truth_scores_100_and_anything_else_unscorable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("synthrs"); // written by `synth::write`, which wants a new folder
    let masks = dataset(&root);
    let (h, w) = (masks[0].height, masks[0].width);
    let pred = tempfile::tempdir().unwrap();
    let name = |i: usize| pred.path().join(format!("{i:06}.png"));
    for (i, m) in masks.iter().enumerate() {
        gray(m).save(name(i)).unwrap();
    }
    let size = format!("{h}x{w}");
    for extra in [
        vec!["--protocol", "cgformer"],
        vec!["--size", size.as_str()],
    ] {
        let (ok, text) = score(&root, pred.path(), &extra);
        assert!(ok, "{text}");
        assert!(
            text.contains("mIoU 100.00  oIoU 100.00"),
            "{extra:?}: {text}"
        );
    }
    let (ok, text) = score(&root, pred.path(), &[]);
    assert!(!ok && text.contains("pass --size"), "{text}");

    let refused = |text: &str, says: &str| {
        let file = name(1).display().to_string();
        assert!(
            text.contains(&file) && text.contains(says),
            "expected {says:?}: {text}"
        );
    };
    // A 1x1 white mask.
    GrayImage::from_pixel(1, 1, Luma([255]))
        .save(name(1))
        .unwrap();
    for extra in [
        vec!["--protocol", "cgformer"],
        vec!["--size", size.as_str()],
    ] {
        let (ok, text) = score(&root, pred.path(), &extra);
        assert!(!ok);
        refused(&text, "the mask is 1x1");
    }
    // 0/1 in 8 bits.
    GrayImage::from_pixel(w as u32, h as u32, Luma([1]))
        .save(name(1))
        .unwrap();
    let (ok, text) = score(&root, pred.path(), &["--protocol", "cgformer"]);
    assert!(!ok);
    refused(&text, "holds the value 1");
    // 16-bit 0/65535.
    let wide: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_pixel(w as u32, h as u32, Luma([65535]));
    wide.save(name(1)).unwrap();
    let (ok, text) = score(&root, pred.path(), &["--protocol", "cgformer"]);
    assert!(!ok);
    refused(&text, "L16");
    // Red on black.
    let rgb: ImageBuffer<Rgb<u8>, Vec<u8>> =
        ImageBuffer::from_pixel(w as u32, h as u32, Rgb([255, 0, 0]));
    rgb.save(name(1)).unwrap();
    let (ok, text) = score(&root, pred.path(), &["--protocol", "cgformer"]);
    assert!(!ok);
    refused(&text, "Rgb8");
}
