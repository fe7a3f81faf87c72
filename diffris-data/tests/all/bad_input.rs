//! Bad input gives an error naming the file and record, never a panic: one test per case.

use std::path::Path;

use diffris_data::DatasetFormat;
use serde_pickle::Value;

use crate::pickle::dict;

fn s(x: &str) -> Value {
    Value::String(x.into())
}

/// A one-image, one-ref RRSIS-D root; `refs`/`instances` override the defaults.
fn rrsisd(root: &Path, refs: Option<Value>, instances: Option<serde_json::Value>, sentence: &str) {
    std::fs::create_dir_all(root.join("rrsisd")).unwrap();
    let images = root.join("images/rrsisd/JPEGImages");
    std::fs::create_dir_all(&images).unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]))
        .save(images.join("00001.jpg"))
        .unwrap();
    let refs = refs.unwrap_or_else(|| {
        Value::List(vec![dict(vec![
            ("ref_id", Value::I64(7)),
            ("ann_id", Value::I64(1)),
            ("image_id", Value::I64(1)),
            ("split", s("train")),
            (
                "sentences",
                Value::List(vec![dict(vec![
                    ("sent_id", Value::I64(3)),
                    ("sent", s(sentence)),
                ])]),
            ),
        ])])
    });
    let bytes = serde_pickle::value_to_vec(&refs, serde_pickle::SerOptions::new()).unwrap();
    std::fs::write(root.join("rrsisd/refs(unc).p"), bytes).unwrap();
    let instances = instances.unwrap_or_else(|| {
        serde_json::json!({
            "images": [{"id": 1, "file_name": "00001.jpg", "height": 4, "width": 4}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "segmentation": [{"size": [4, 4], "counts": "529"}], "bbox": [0,0,1,1], "area": 2, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "ship"}]
        })
    });
    std::fs::write(root.join("rrsisd/instances.json"), instances.to_string()).unwrap();
}

fn first_mask_error(root: &Path) -> String {
    let samples = DatasetFormat::Rrsisd.read_split(root, "train").unwrap();
    samples[0].load_mask().unwrap_err().to_string()
}

#[test]
fn valid_root_reads() {
    let dir = tempfile::tempdir().unwrap();
    rrsisd(dir.path(), None, None, "the ship");
    let samples = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap();
    assert_eq!(samples.len(), 1);
    // Runs 5, 2, 9: pixels 5 and 6 (column-major) are foreground.
    assert_eq!(samples[0].load_mask().unwrap().area(), 2);
}

#[test]
fn missing_image_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    rrsisd(dir.path(), None, None, "the ship");
    std::fs::remove_file(dir.path().join("images/rrsisd/JPEGImages/00001.jpg")).unwrap();
    let samples = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap();
    let err = samples[0].load_image().unwrap_err().to_string();
    assert!(err.contains("00001.jpg"), "{err}");
}

#[test]
fn missing_mask_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("img_rgb")).unwrap();
    image::RgbImage::new(4, 4)
        .save(root.join("img_rgb/a.png"))
        .unwrap();
    std::fs::write(root.join("output_phrase_train.txt"), "a.png the red car\n").unwrap();
    let samples = DatasetFormat::Risbench.read_split(root, "train").unwrap();
    let err = samples[0].load_mask().unwrap_err().to_string();
    assert!(err.contains("mask") && err.contains("a.png"), "{err}");
}

#[test]
fn truncated_image_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    rrsisd(dir.path(), None, None, "the ship");
    let path = dir.path().join("images/rrsisd/JPEGImages/00001.jpg");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let samples = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap();
    let err = samples[0].load_image().unwrap_err().to_string();
    assert!(err.contains("00001.jpg") && err.contains("decode"), "{err}");
}

#[test]
fn unknown_split_lists_the_available_ones() {
    let dir = tempfile::tempdir().unwrap();
    rrsisd(dir.path(), None, None, "the ship");
    let err = DatasetFormat::Rrsisd
        .read_split(dir.path(), "validation")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("validation") && err.contains("available: train"),
        "{err}"
    );
}

#[test]
fn pickle_of_the_wrong_structure_is_named() {
    let dir = tempfile::tempdir().unwrap();
    rrsisd(
        dir.path(),
        Some(dict(vec![("refs", Value::List(vec![]))])),
        None,
        "x",
    );
    let err = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap_err()
        .to_string();
    assert!(err.contains("refs(unc).p") && err.contains("list"), "{err}");
    // A ref without its annotation id names the ref.
    let dir = tempfile::tempdir().unwrap();
    let r = Value::List(vec![dict(vec![
        ("ref_id", Value::I64(9)),
        ("split", s("train")),
    ])]);
    rrsisd(dir.path(), Some(r), None, "x");
    let err = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ref 9") && err.contains("ann_id"), "{err}");
}

#[test]
fn rle_with_the_wrong_total_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let instances = serde_json::json!({
        "images": [{"id": 1, "file_name": "00001.jpg", "height": 4, "width": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "segmentation": [{"size": [4, 4], "counts": "52"}]}],
        "categories": [{"id": 1, "name": "ship"}]
    });
    rrsisd(dir.path(), None, Some(instances), "the ship");
    let err = first_mask_error(dir.path());
    assert!(
        err.contains("ref 7") && err.contains("sum to 7") && err.contains("16 pixels"),
        "{err}"
    );
}

#[test]
fn annotation_id_that_does_not_exist_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let r = Value::List(vec![dict(vec![
        ("ref_id", Value::I64(7)),
        ("ann_id", Value::I64(99)),
        ("image_id", Value::I64(1)),
        ("split", s("train")),
        (
            "sentences",
            Value::List(vec![dict(vec![
                ("sent_id", Value::I64(3)),
                ("sent", s("x")),
            ])]),
        ),
    ])]);
    rrsisd(dir.path(), Some(r), None, "x");
    let err = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ref 7") && err.contains("annotation id 99"),
        "{err}"
    );
}

#[test]
fn empty_expression_is_named() {
    let dir = tempfile::tempdir().unwrap();
    rrsisd(dir.path(), None, None, "   ");
    let err = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ref 7 sentence 3") && err.contains("empty"),
        "{err}"
    );
    // In a phrase file, a line with an id and no words.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("output_phrase_test.txt"),
        "3 the tank\n17\n",
    )
    .unwrap();
    let err = DatasetFormat::Refsegrs
        .read_split(dir.path(), "test")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("output_phrase_test.txt") && err.contains("line 2") && err.contains("empty"),
        "{err}"
    );
}

#[test]
fn truncated_jpeg_is_an_error_and_a_whole_one_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.jpg");
    let img = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 90]));
    img.save(&path).unwrap();
    let whole = diffris_data::sample::open_image(&path).unwrap();
    assert_eq!((whole.width(), whole.height()), (64, 48));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = diffris_data::sample::open_image(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("a.jpg") && err.contains("truncated"), "{err}");

    // An end-of-image marker inside a comment segment (here right after the start marker) does
    // not make a cut-off file whole.
    let mut commented = bytes[..2].to_vec();
    commented.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x04, 0xFF, 0xD9]);
    commented.extend_from_slice(&bytes[2..]);
    std::fs::write(&path, &commented).unwrap();
    let read = diffris_data::sample::open_image(&path).unwrap();
    assert_eq!(
        read.to_rgb8(),
        whole.to_rgb8(),
        "the comment changes no pixel"
    );
    std::fs::write(&path, &commented[..commented.len() - 40]).unwrap();
    let err = diffris_data::sample::open_image(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn mask_of_another_size_than_its_image_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // The image file is 4x4; its record and annotation describe a 4x5 mask (uncompressed RLE
    // over 20 pixels).
    let instances = serde_json::json!({
        "images": [{"id": 1, "file_name": "00001.jpg", "height": 4, "width": 5}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "segmentation": {"size": [4, 5], "counts": [5, 2, 13]},
                         "bbox": [0,0,1,1], "area": 2, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "ship"}]
    });
    rrsisd(dir.path(), None, Some(instances), "the ship");
    let samples = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap();
    let tokenizer = diffris_data::ClipTokenizer::embedded().unwrap();
    let err = diffris_data::batch::prepare(&samples[0], 0, &tokenizer, 8, 8)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4x5") && err.contains("4x4") && err.contains("00001.jpg"),
        "{err}"
    );
}

/// `instances.json` is checked as a whole before a sample is made: ids unique, sizes agreeing
/// and bounded, file names inside the image folder, each ref on its annotation's image.
#[test]
fn inconsistent_coco_records_are_named() {
    let ann = |id: i64, image: i64, size: [u64; 2]| {
        serde_json::json!({"id": id, "image_id": image, "category_id": 1,
                           "segmentation": {"size": size, "counts": [5, 2, 9]}})
    };
    let image = |id: i64, file: &str, h: u64, w: u64| serde_json::json!({"id": id, "file_name": file, "height": h, "width": w});
    let cases = [
        (
            vec![image(1, "00001.jpg", 4, 4), image(1, "00002.jpg", 4, 4)],
            vec![ann(1, 1, [4, 4])],
            "image 1: its id is used by two images",
        ),
        (
            vec![image(1, "00001.jpg", 4, 4)],
            vec![ann(1, 1, [4, 4]), ann(1, 1, [4, 4])],
            "annotation 1: its id is used by two annotations",
        ),
        (
            vec![image(1, "00001.jpg", 4, 4)],
            // An RLE claiming a huge mask on a 4x4 image: refused before decoding.
            vec![ann(1, 1, [4_000_000, 4_000_000])],
            "an RLE of size [4000000, 4000000] on image 1, which is 4x4",
        ),
        (
            vec![image(1, "00001.jpg", 100_000, 100_000)],
            vec![ann(1, 1, [100_000, 100_000])],
            "image 1: a size of 100000x100000",
        ),
        (
            vec![image(1, "/etc/passwd", 4, 4)],
            vec![ann(1, 1, [4, 4])],
            "file_name `/etc/passwd` must be a relative path inside the image folder",
        ),
        (
            vec![image(1, "../../secret.jpg", 4, 4)],
            vec![ann(1, 1, [4, 4])],
            "file_name `../../secret.jpg` must be a relative path",
        ),
    ];
    for (images, annotations, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let instances = serde_json::json!({
            "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "ship"}]
        });
        rrsisd(dir.path(), None, Some(instances), "the ship");
        let err = DatasetFormat::Rrsisd
            .read_split(dir.path(), "train")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("instances.json") && err.contains(expected),
            "{expected}: {err}"
        );
    }

    // A ref on image 2 whose annotation is on image 1 would pair one image's mask with
    // another's pixels.
    let dir = tempfile::tempdir().unwrap();
    let r = Value::List(vec![dict(vec![
        ("ref_id", Value::I64(7)),
        ("ann_id", Value::I64(1)),
        ("image_id", Value::I64(2)),
        ("split", s("train")),
        (
            "sentences",
            Value::List(vec![dict(vec![
                ("sent_id", Value::I64(3)),
                ("sent", s("x")),
            ])]),
        ),
        ("file_name", s("../x.jpg")),
    ])]);
    rrsisd(dir.path(), Some(r.clone()), None, "x");
    let err = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refs(unc).p") && err.contains("file_name `../x.jpg`"),
        "{err}"
    );
    let Value::List(mut refs) = r else {
        unreachable!()
    };
    let Value::Dict(d) = &mut refs[0] else {
        unreachable!()
    };
    d.remove(&serde_pickle::HashableValue::String("file_name".into()));
    rrsisd(dir.path(), Some(Value::List(refs)), None, "x");
    let err = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ref 7") && err.contains("image id 2, but its annotation 1 is on image 1"),
        "{err}"
    );
}
