//! The objects of a scene (what the random-object baseline draws from) are found under the same
//! image path as the samples that refer to them, however the dataset names its image files.

use std::path::Path;

use diffris_data::DatasetFormat;
use serde_pickle::Value;

use crate::pickle::dict;

/// An RRSIS-D root with one image of two annotated objects, one of them referred to. The ref
/// carries the image's `file_name`; `instances.json` does not (as in some RRSIS-D exports).
fn root_with_names_only_in_refs(root: &Path) {
    std::fs::create_dir_all(root.join("rrsisd")).unwrap();
    let images = root.join("images/rrsisd/JPEGImages");
    std::fs::create_dir_all(&images).unwrap();
    image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30]))
        .save(images.join("scene_a.jpg"))
        .unwrap();
    let refs = Value::List(vec![dict(vec![
        ("ref_id", Value::I64(7)),
        ("ann_id", Value::I64(1)),
        ("image_id", Value::I64(1)),
        ("split", Value::String("train".into())),
        ("file_name", Value::String("scene_a.jpg".into())),
        (
            "sentences",
            Value::List(vec![dict(vec![
                ("sent_id", Value::I64(3)),
                ("sent", Value::String("the ship".into())),
            ])]),
        ),
    ])]);
    let bytes = serde_pickle::value_to_vec(&refs, serde_pickle::SerOptions::new()).unwrap();
    std::fs::write(root.join("rrsisd/refs(unc).p"), bytes).unwrap();
    let instances = serde_json::json!({
        "images": [{"id": 1, "height": 4, "width": 4}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [{"size": [4, 4], "counts": "529"}]},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [{"size": [4, 4], "counts": "03="}]}
        ],
        "categories": [{"id": 1, "name": "ship"}]
    });
    std::fs::write(root.join("rrsisd/instances.json"), instances.to_string()).unwrap();
}

#[test]
fn scene_objects_use_the_image_file_named_by_the_refs() {
    let dir = tempfile::tempdir().unwrap();
    root_with_names_only_in_refs(dir.path());
    let samples = DatasetFormat::Rrsisd
        .read_split(dir.path(), "train")
        .unwrap();
    assert_eq!(samples.len(), 1);
    assert!(
        samples[0]
            .image
            .ends_with("images/rrsisd/JPEGImages/scene_a.jpg")
    );
    assert!(samples[0].load_image().is_ok());
    let objects = DatasetFormat::Rrsisd
        .scene_objects(dir.path())
        .unwrap()
        .expect("RRSIS-D lists every object");
    let scene = objects
        .get(&samples[0].image)
        .expect("the scene's objects are keyed by the samples' image path");
    assert_eq!(scene.len(), 2);
}

#[test]
fn phrase_formats_list_no_scene_objects() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        DatasetFormat::Refsegrs
            .scene_objects(dir.path())
            .unwrap()
            .is_none()
    );
}
