//! RRSIS-D (RMSIN) layout, also used by SynthRS:
//!
//! ```text
//! <root>/rrsisd/refs(unc).p             Python pickle (protocol 2-5): a list of ref dicts
//! <root>/rrsisd/instances.json          COCO-like {images, annotations, categories}
//! <root>/images/rrsisd/JPEGImages/      00011.jpg ... (image_id 11)
//! ```
//!
//! One sample per sentence; split `test` selects every ref whose split contains "test".
//! Strings may be pickled as `str` or `bytes`. The pickle is parsed, never executed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_pickle::{HashableValue, Value};

use crate::error::{DataError, Result};
use crate::sample::{MaskSource, Sample, SegmentPart};

/// The files of an RRSIS-D root.
#[derive(Clone, Debug)]
pub struct RrsisDLayout {
    pub refs: PathBuf,
    pub instances: PathBuf,
    pub images: PathBuf,
}

impl RrsisDLayout {
    pub fn new(root: &Path) -> Self {
        // RMSIN's code reads `images/rsdata/JPEGImages` while its README says `rrsisd`: accept
        // the former when only it exists.
        let images = root.join("images").join("rrsisd").join("JPEGImages");
        let alternative = root.join("images").join("rsdata").join("JPEGImages");
        Self {
            refs: root.join("rrsisd").join("refs(unc).p"),
            instances: root.join("rrsisd").join("instances.json"),
            images: if !images.is_dir() && alternative.is_dir() {
                alternative
            } else {
                images
            },
        }
    }
}

/// One ref record of `refs(unc).p`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ref {
    pub ref_id: i64,
    pub ann_id: i64,
    pub image_id: i64,
    pub split: String,
    /// `(sent_id, sent)` in file order.
    pub sentences: Vec<(i64, String)>,
    pub file_name: Option<String>,
}

#[derive(Deserialize)]
struct Instances {
    images: Vec<ImageRecord>,
    annotations: Vec<AnnotationRecord>,
    categories: Vec<CategoryRecord>,
}

#[derive(Deserialize)]
struct ImageRecord {
    id: i64,
    file_name: Option<String>,
    height: usize,
    width: usize,
}

#[derive(Deserialize)]
struct AnnotationRecord {
    id: i64,
    image_id: i64,
    category_id: i64,
    segmentation: serde_json::Value,
}

#[derive(Deserialize)]
struct CategoryRecord {
    id: i64,
    name: String,
}

fn key_str(k: &HashableValue) -> Option<&str> {
    match k {
        HashableValue::String(s) => Some(s),
        HashableValue::Bytes(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::I64(i) => Some(*i),
        Value::Int(big) => big.to_string().parse().ok(),
        _ => None,
    }
}

fn as_list(v: &Value) -> Option<&Vec<Value>> {
    match v {
        Value::List(l) | Value::Tuple(l) => Some(l),
        _ => None,
    }
}

struct RecordReader<'a> {
    path: &'a Path,
    record: String,
    dict: BTreeMap<&'a str, &'a Value>,
}

impl<'a> RecordReader<'a> {
    fn new(path: &'a Path, record: String, v: &'a Value) -> Result<Self> {
        let Value::Dict(d) = v else {
            return Err(DataError::record(path, record, "expected a dict"));
        };
        let dict = d
            .iter()
            .filter_map(|(k, v)| Some((key_str(k)?, v)))
            .collect();
        Ok(Self { path, record, dict })
    }

    fn err(&self, message: String) -> DataError {
        DataError::record(self.path, self.record.clone(), message)
    }

    fn get(&self, key: &str) -> Result<&'a Value> {
        self.dict
            .get(key)
            .copied()
            .ok_or_else(|| self.err(format!("missing key `{key}`")))
    }

    fn int(&self, key: &str) -> Result<i64> {
        as_int(self.get(key)?).ok_or_else(|| self.err(format!("`{key}` is not an integer")))
    }

    fn string(&self, key: &str) -> Result<String> {
        as_string(self.get(key)?).ok_or_else(|| self.err(format!("`{key}` is not a string")))
    }
}

/// Reads every ref of a `refs(unc).p` file.
pub fn read_refs(path: &Path) -> Result<Vec<Ref>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let value = serde_pickle::value_from_slice(&bytes, serde_pickle::DeOptions::new())
        .map_err(|e| DataError::format(path, format!("not a readable pickle: {e}")))?;
    let list = as_list(&value).ok_or_else(|| {
        DataError::format(
            path,
            "expected a pickled list of ref dicts at the top level",
        )
    })?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let r = RecordReader::new(path, format!("ref #{i}"), v)?;
            let ref_id = r.int("ref_id")?;
            let r = RecordReader {
                record: format!("ref {ref_id}"),
                ..r
            };
            let (ann_id, image_id, split) =
                (r.int("ann_id")?, r.int("image_id")?, r.string("split")?);
            let sentences = as_list(r.get("sentences")?)
                .ok_or_else(|| r.err("`sentences` is not a list".into()))?
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    let s = RecordReader::new(path, format!("ref {ref_id} sentence #{j}"), s)?;
                    let text = s.string("sent").or_else(|_| s.string("raw"))?;
                    Ok((s.int("sent_id")?, text))
                })
                .collect::<Result<Vec<_>>>()?;
            let file_name = r.dict.get("file_name").and_then(|v| as_string(v));
            if let Some(f) = &file_name {
                inside_folder(f).map_err(|m| r.err(m))?;
            }
            Ok(Ref {
                ref_id,
                ann_id,
                image_id,
                split,
                sentences,
                file_name,
            })
        })
        .collect()
}

/// Whether a ref's split string belongs to the requested split.
pub fn split_matches(requested: &str, actual: &str) -> bool {
    if requested == "test" {
        actual.contains("test")
    } else {
        requested == actual
    }
}

fn parse_segmentation(
    seg: &serde_json::Value,
    height: usize,
    width: usize,
) -> std::result::Result<(usize, usize, Vec<SegmentPart>), String> {
    use serde_json::Value as J;
    let rle_part = |o: &serde_json::Map<String, J>| -> std::result::Result<_, String> {
        let size = o
            .get("size")
            .and_then(J::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
            .ok_or("an RLE without a valid `size` [h, w]")?;
        let part = match o.get("counts") {
            Some(J::String(s)) => SegmentPart::Compressed(s.clone()),
            Some(J::Array(a)) => SegmentPart::Counts(
                a.iter()
                    .map(J::as_u64)
                    .collect::<Option<_>>()
                    .ok_or("RLE `counts` must be non-negative integers")?,
            ),
            _ => return Err("an RLE without `counts`".to_string()),
        };
        Ok((size, part))
    };
    match seg {
        J::Object(o) => {
            let ((h, w), part) = rle_part(o)?;
            Ok((h, w, vec![part]))
        }
        J::Array(items) if !items.is_empty() => {
            let mut size = None;
            let mut parts = Vec::new();
            for item in items {
                match item {
                    J::Object(o) => {
                        let (s, part) = rle_part(o)?;
                        if size.is_some_and(|prev| prev != s) {
                            return Err("RLE parts of different sizes".into());
                        }
                        size = Some(s);
                        parts.push(part);
                    }
                    J::Array(coords) => parts.push(SegmentPart::Polygon(
                        coords
                            .iter()
                            .map(J::as_f64)
                            .collect::<Option<_>>()
                            .ok_or("polygon coordinates must be numbers")?,
                    )),
                    _ => return Err("a segmentation part is neither an RLE nor a polygon".into()),
                }
            }
            let (h, w) = size.unwrap_or((height, width));
            // pycocotools reads a polygon list whose first entry has exactly four numbers as
            // boxes `[x, y, w, h]`; do the same so masks agree with the reference tools.
            if let Some(SegmentPart::Polygon(first)) = parts.first()
                && first.len() == 4
            {
                for part in &mut parts {
                    if let SegmentPart::Polygon(b) = part
                        && b.len() == 4
                    {
                        let (x, y, bw, bh) = (b[0], b[1], b[2], b[3]);
                        *b = vec![x, y, x, y + bh, x + bw, y + bh, x + bw, y];
                    }
                }
            }
            Ok((h, w, parts))
        }
        _ => Err("`segmentation` must be an RLE or a non-empty list of parts".into()),
    }
}

/// The most pixels an image record may declare (16384 x 16384): masks are decoded at the size
/// their record gives, so a larger one is refused before anything is allocated for it.
pub const MAX_PIXELS: usize = 1 << 28;

/// Checks that an image file name from a dataset file stays inside the image folder: a relative
/// path of plain components (no `..`, no root, no drive).
fn inside_folder(name: &str) -> std::result::Result<(), String> {
    let path = Path::new(name);
    let plain = !name.is_empty()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(format!(
            "file_name `{name}` must be a relative path inside the image folder"
        ))
    }
}

/// `instances.json` by id, checked once for both readers of it: ids unique, image sizes within
/// [`MAX_PIXELS`], image file names inside the image folder.
struct Index<'a> {
    images: HashMap<i64, &'a ImageRecord>,
    anns: HashMap<i64, &'a AnnotationRecord>,
    cats: HashMap<i64, &'a str>,
}

impl<'a> Index<'a> {
    fn new(inst: &'a Instances, path: &Path) -> Result<Self> {
        let mut images = HashMap::new();
        for image in &inst.images {
            let record = format!("image {}", image.id);
            if images.insert(image.id, image).is_some() {
                return Err(DataError::record(
                    path,
                    record,
                    "its id is used by two images",
                ));
            }
            let pixels = image.height.checked_mul(image.width);
            if image.height == 0 || image.width == 0 || pixels.is_none_or(|p| p > MAX_PIXELS) {
                return Err(DataError::record(
                    path,
                    record,
                    format!(
                        "a size of {}x{} (diffris reads images of 1 to {MAX_PIXELS} pixels)",
                        image.height, image.width
                    ),
                ));
            }
            if let Some(f) = &image.file_name {
                inside_folder(f).map_err(|m| DataError::record(path, record, m))?;
            }
        }
        let mut anns = HashMap::new();
        for ann in &inst.annotations {
            if anns.insert(ann.id, ann).is_some() {
                return Err(DataError::record(
                    path,
                    format!("annotation {}", ann.id),
                    "its id is used by two annotations",
                ));
            }
        }
        let cats = inst
            .categories
            .iter()
            .map(|c| (c.id, c.name.as_str()))
            .collect();
        Ok(Self { images, anns, cats })
    }

    /// The image of `ann` and its segmentation, whose size must be the image's.
    fn segmentation(
        &self,
        ann: &AnnotationRecord,
        path: &Path,
    ) -> Result<(&'a ImageRecord, Vec<SegmentPart>)> {
        let record = || format!("annotation {}", ann.id);
        let image = *self.images.get(&ann.image_id).ok_or_else(|| {
            DataError::record(
                path,
                record(),
                format!("image id {} does not exist", ann.image_id),
            )
        })?;
        let (height, width, parts) =
            parse_segmentation(&ann.segmentation, image.height, image.width)
                .map_err(|m| DataError::record(path, record(), m))?;
        if (height, width) != (image.height, image.width) {
            return Err(DataError::record(
                path,
                record(),
                format!(
                    "an RLE of size [{height}, {width}] on image {}, which is {}x{}",
                    image.id, image.height, image.width
                ),
            ));
        }
        Ok((image, parts))
    }
}

/// Reads the samples of `split` (one per sentence, in ref then sentence order).
pub fn read_split(root: &Path, split: &str) -> Result<Vec<Sample>> {
    let layout = RrsisDLayout::new(root);
    let refs = read_refs(&layout.refs)?;
    let splits: BTreeSet<&str> = refs.iter().map(|r| r.split.as_str()).collect();
    if !refs.iter().any(|r| split_matches(split, &r.split)) {
        return Err(DataError::UnknownSplit {
            root: root.to_path_buf(),
            split: split.to_string(),
            available: splits.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    let inst = read_instances(&layout.instances)?;
    let index = Index::new(&inst, &layout.instances)?;
    let files = ImageFiles::new(&layout, &refs);
    let mut samples = Vec::new();
    for r in refs.iter().filter(|r| split_matches(split, &r.split)) {
        let record = format!("ref {}", r.ref_id);
        let ann = index.anns.get(&r.ann_id).ok_or_else(|| {
            DataError::record(
                &layout.refs,
                &record,
                format!(
                    "annotation id {} does not exist in {}",
                    r.ann_id,
                    layout.instances.display()
                ),
            )
        })?;
        let (image, parts) = index.segmentation(ann, &layout.instances)?;
        if r.image_id != image.id {
            return Err(DataError::record(
                &layout.refs,
                &record,
                format!(
                    "image id {}, but its annotation {} is on image {} (in {})",
                    r.image_id,
                    ann.id,
                    image.id,
                    layout.instances.display()
                ),
            ));
        }
        let (height, width) = (image.height, image.width);
        let image_path = files.path(image);
        for (sent_id, sentence) in &r.sentences {
            if sentence.trim().is_empty() {
                return Err(DataError::record(
                    &layout.refs,
                    format!("{record} sentence {sent_id}"),
                    "empty referring expression",
                ));
            }
            samples.push(Sample {
                id: format!("ref {} sent {sent_id}", r.ref_id),
                image: image_path.clone(),
                mask: MaskSource::Coco {
                    height,
                    width,
                    parts: parts.clone(),
                },
                sentence: sentence.clone(),
                category: index.cats.get(&ann.category_id).map(|c| c.to_string()),
                origin: layout.refs.clone(),
            });
        }
    }
    Ok(samples)
}

/// Where the image of an `instances.json` record is: its own `file_name`, else the `file_name`
/// a ref to the image carries (RMSIN's refs have one, some `instances.json` files do not), else
/// `{id:05}.jpg`. The one place both the samples and the scene objects find their image.
struct ImageFiles<'a> {
    layout: &'a RrsisDLayout,
    from_refs: HashMap<i64, &'a str>,
}

impl<'a> ImageFiles<'a> {
    fn new(layout: &'a RrsisDLayout, refs: &'a [Ref]) -> Self {
        let mut from_refs = HashMap::new();
        for r in refs {
            if let Some(f) = &r.file_name {
                from_refs.entry(r.image_id).or_insert(f.as_str());
            }
        }
        Self { layout, from_refs }
    }

    fn path(&self, image: &ImageRecord) -> PathBuf {
        let file = match (&image.file_name, self.from_refs.get(&image.id)) {
            (Some(f), _) => f.clone(),
            (None, Some(f)) => f.to_string(),
            (None, None) => format!("{:05}.jpg", image.id),
        };
        self.layout.images.join(file)
    }
}

/// Reads and parses `instances.json`.
fn read_instances(path: &Path) -> Result<Instances> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DataError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Every annotation of every image (referred to or not), undecoded, keyed by image path: what
/// a "random object of the scene" baseline draws from.
pub fn image_annotations(root: &Path) -> Result<HashMap<PathBuf, Vec<MaskSource>>> {
    let layout = RrsisDLayout::new(root);
    let refs = read_refs(&layout.refs)?;
    let files = ImageFiles::new(&layout, &refs);
    let inst = read_instances(&layout.instances)?;
    let index = Index::new(&inst, &layout.instances)?;
    let mut out: HashMap<PathBuf, Vec<MaskSource>> = HashMap::new();
    for ann in &inst.annotations {
        if !index.images.contains_key(&ann.image_id) {
            continue;
        }
        let (image, parts) = index.segmentation(ann, &layout.instances)?;
        out.entry(files.path(image))
            .or_default()
            .push(MaskSource::Coco {
                height: image.height,
                width: image.width,
                parts,
            });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_number_polygons_are_boxes_as_in_pycocotools() {
        let seg = serde_json::json!([[1.0, 1.0, 2.0, 1.0]]);
        let (h, w, parts) = parse_segmentation(&seg, 4, 5).unwrap();
        assert_eq!((h, w), (4, 5));
        assert_eq!(
            parts,
            vec![SegmentPart::Polygon(vec![
                1.0, 1.0, 1.0, 2.0, 3.0, 2.0, 3.0, 1.0
            ])]
        );
    }

    #[test]
    fn test_split_takes_every_split_containing_test() {
        assert!(split_matches("test", "testA"));
        assert!(split_matches("test", "test"));
        assert!(!split_matches("test", "val"));
        assert!(!split_matches("val", "valB"));
    }
}
