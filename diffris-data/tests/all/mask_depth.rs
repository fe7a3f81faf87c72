//! Mask files are read at their stored bit depth: a 16-bit mask keeps its values (a 0/255 mask
//! stored in 16 bits used to become empty: converting to 8 bits divides by 257), a colour mask
//! whose channels agree reads as its gray level, and one whose channels differ is an error that
//! names the file; a COCO annotation of size 0x0 is refused.

use std::path::{Path, PathBuf};

use diffris_data::{MaskSource, Sample};
use image::{ImageBuffer, Luma, Rgb};

fn sample(mask: &Path, threshold: u8) -> Sample {
    Sample {
        id: "s".into(),
        image: PathBuf::from("s.png"),
        mask: MaskSource::File {
            path: mask.to_path_buf(),
            threshold,
        },
        sentence: "x".into(),
        category: None,
        origin: PathBuf::from("test"),
    }
}

/// The left half of a 6x4 image is foreground.
fn left_half(x: u32) -> bool {
    x < 3
}

#[test]
fn sixteen_bit_masks_keep_their_values() {
    let dir = tempfile::tempdir().unwrap();
    for (fg, threshold) in [(255u16, 127u8), (1, 0), (65535, 127)] {
        let path = dir.path().join(format!("m{fg}.png"));
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(6, 4, |x, _| {
            Luma([if left_half(x) { fg } else { 0 }])
        })
        .save(&path)
        .unwrap();
        let m = sample(&path, threshold).load_mask().unwrap();
        assert_eq!((m.height, m.width), (4, 6));
        let expected: Vec<bool> = (0..24).map(|i| left_half(i % 6)).collect();
        assert_eq!(m.data, expected, "16-bit 0/{fg}, threshold {threshold}");
    }
}

#[test]
fn colour_masks_read_as_gray_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let gray = dir.path().join("gray.png");
    ImageBuffer::<Rgb<u8>, Vec<u8>>::from_fn(6, 4, |x, _| {
        Rgb(if left_half(x) { [255; 3] } else { [0; 3] })
    })
    .save(&gray)
    .unwrap();
    let m = sample(&gray, 127).load_mask().unwrap();
    assert_eq!(m.data.iter().filter(|&&v| v).count(), 12);

    let red = dir.path().join("red.png");
    ImageBuffer::<Rgb<u8>, Vec<u8>>::from_fn(6, 4, |x, _| {
        Rgb(if left_half(x) { [255, 0, 0] } else { [0; 3] })
    })
    .save(&red)
    .unwrap();
    let msg = sample(&red, 127).load_mask().unwrap_err().to_string();
    assert!(
        msg.contains("red.png") && msg.contains("colour mask"),
        "{msg}"
    );
}

#[test]
fn an_annotation_of_size_zero_is_refused() {
    let s = Sample {
        mask: MaskSource::Coco {
            height: 0,
            width: 0,
            parts: vec![],
        },
        ..sample(Path::new("unused.png"), 0)
    };
    let msg = s.load_mask().unwrap_err().to_string();
    assert!(msg.contains("size is 0x0"), "{msg}");
}
