//! SynthRS: the synthetic referring dataset behind the embedded default. Seeded scenes that look
//! like aerial tiles, expressions that single out exactly one object, exact masks, written to
//! disk in the RRSIS-D layout so the same reader serves synthetic and real data.

pub mod caption;
pub mod caption_set;
pub mod language;
pub mod scene;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_pickle::{HashableValue, Value};

use crate::error::{DataError, Result};
use crate::formats::rrsisd::RrsisDLayout;
use crate::rle::{encode_counts, mask_to_counts};
use language::choose_descriptions;
use scene::Category;

/// How a SynthRS set is generated. Equal configs give byte-identical datasets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Side of the square images in pixels.
    pub image_size: usize,
    /// Samples (expressions) per split.
    pub train: usize,
    pub val: usize,
    pub test: usize,
    pub seed: u64,
    /// Objects per scene, inclusive range.
    pub min_objects: usize,
    pub max_objects: usize,
    /// Objects referred to per scene, and expressions per referred object.
    pub targets_per_scene: usize,
    pub expressions_per_target: usize,
    /// Multiplier of every object size (relative to the image side); small images need
    /// relatively larger objects to stay recognisable.
    #[serde(default = "one")]
    pub object_scale: f32,
}

fn one() -> f32 {
    1.0
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            image_size: 128,
            train: 700,
            val: 100,
            test: 200,
            seed: 0,
            min_objects: 3,
            max_objects: 6,
            targets_per_scene: 2,
            expressions_per_target: 2,
            object_scale: 1.0,
        }
    }
}

/// Samples written per split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthSummary {
    pub images: usize,
    pub samples: BTreeMap<String, usize>,
}

/// Name of the file recording the config a directory was generated with.
pub const MANIFEST: &str = "synthrs.json";

#[derive(Serialize, Deserialize)]
struct Manifest {
    config: SynthConfig,
    summary: SynthSummary,
}

struct Writer {
    layout: RrsisDLayout,
    images: Vec<serde_json::Value>,
    annotations: Vec<serde_json::Value>,
    refs: Vec<Value>,
    next_sent: i64,
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (HashableValue::String(k.to_string()), v))
            .collect(),
    )
}

impl Writer {
    fn split(&mut self, name: &str, wanted: usize, cfg: &SynthConfig, salt: u64) -> Result<usize> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt);
        let mut written = 0;
        let mut empty_scenes = 0;
        let mut crowded_scenes = 0;
        while written < wanted {
            let n = rng.random_range(cfg.min_objects..=cfg.max_objects.max(cfg.min_objects));
            let scene = scene::generate(&mut rng, cfg.image_size, n, cfg.object_scale);
            // Large objects in a small image may not all fit; such a scene is drawn again, so
            // every scene has at least `min_objects` objects.
            if scene.objects.len() < cfg.min_objects {
                crowded_scenes += 1;
                if crowded_scenes > 1000 {
                    return Err(DataError::format(
                        &self.layout.refs,
                        format!(
                            "SynthRS could not place {} objects in a {}px image 1000 times; lower \
                             object_scale ({}) or min_objects",
                            cfg.min_objects, cfg.image_size, cfg.object_scale
                        ),
                    ));
                }
                continue;
            }
            crowded_scenes = 0;
            let mut targets: Vec<usize> = (0..scene.objects.len()).collect();
            // Shuffle targets deterministically (Fisher-Yates).
            for k in (1..targets.len()).rev() {
                targets.swap(k, rng.random_range(0..=k));
            }
            let mut refs_here = Vec::new();
            for &t in &targets {
                if refs_here.len() == cfg.targets_per_scene {
                    break;
                }
                let descs = choose_descriptions(&mut rng, &scene, t, cfg.expressions_per_target);
                if !descs.is_empty() {
                    refs_here.push((t, descs));
                }
            }
            if refs_here.is_empty() {
                empty_scenes += 1;
                if empty_scenes > 1000 {
                    return Err(DataError::format(
                        &self.layout.refs,
                        "SynthRS could not describe any object uniquely; check min/max_objects",
                    ));
                }
                continue;
            }
            let image_id = self.images.len() as i64 + 1;
            let file_name = format!("{image_id:05}.jpg");
            let path = self.layout.images.join(&file_name);
            write_jpeg(&path, &scene.pixels, cfg.image_size)?;
            let size = cfg.image_size;
            self.images.push(serde_json::json!({
                "id": image_id, "file_name": file_name, "height": size, "width": size
            }));
            // Like RefCOCO's `instances.json`, every object of the image is annotated, referred
            // to or not (the random-object baseline and `data inspect` rely on it).
            let first_ann = self.annotations.len() as i64 + 1;
            for (obj, mask) in scene.objects.iter().zip(&scene.masks) {
                let (mut x0, mut y0, mut x1, mut y1) = (size, size, 0, 0);
                for (k, _) in mask.data.iter().enumerate().filter(|(_, v)| **v) {
                    let (y, x) = (k / size, k % size);
                    (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
                }
                self.annotations.push(serde_json::json!({
                    "id": self.annotations.len() as i64 + 1, "image_id": image_id,
                    "category_id": obj.category.id(),
                    "segmentation": [{"size": [size, size], "counts": encode_counts(&mask_to_counts(mask))}],
                    "bbox": [x0, y0, x1.saturating_sub(x0), y1.saturating_sub(y0)],
                    "area": mask.area(), "iscrowd": 0
                }));
            }
            for (t, descs) in refs_here {
                if written == wanted {
                    break;
                }
                let ann_id = first_ann + t as i64;
                let obj = &scene.objects[t];
                let take = descs.len().min(wanted - written);
                let mut sentences = Vec::new();
                let mut sent_ids = Vec::new();
                for d in &descs[..take] {
                    let text = d.text();
                    self.next_sent += 1;
                    sent_ids.push(Value::I64(self.next_sent));
                    sentences.push(dict(vec![
                        ("sent_id", Value::I64(self.next_sent)),
                        (
                            "tokens",
                            Value::List(text.split(' ').map(|w| Value::String(w.into())).collect()),
                        ),
                        ("raw", Value::String(text.clone())),
                        ("sent", Value::String(text)),
                    ]));
                }
                written += take;
                self.refs.push(dict(vec![
                    ("ref_id", Value::I64(self.refs.len() as i64 + 1)),
                    ("ann_id", Value::I64(ann_id)),
                    ("image_id", Value::I64(image_id)),
                    ("category_id", Value::I64(obj.category.id())),
                    ("split", Value::String(name.into())),
                    ("sent_ids", Value::List(sent_ids)),
                    ("sentences", Value::List(sentences)),
                    ("file_name", Value::String(format!("{image_id:05}.jpg"))),
                ]));
            }
        }
        Ok(written)
    }
}

fn write_jpeg(path: &Path, rgb: &[u8], size: usize) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut enc =
        image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 95);
    enc.encode(
        rgb,
        size as u32,
        size as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| DataError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, e))
}

/// Generates a SynthRS set into `out`, which must not exist yet. The set is written to a
/// sibling temporary directory and renamed into place, so `out` is either complete or absent.
pub fn write(out: &Path, cfg: &SynthConfig) -> Result<SynthSummary> {
    if cfg.image_size < 32 || cfg.min_objects == 0 || cfg.max_objects < cfg.min_objects {
        return Err(DataError::format(
            out,
            "SynthRS needs image_size >= 32 and 1 <= min_objects <= max_objects",
        ));
    }
    write_new_folder(out, |tmp| write_into(tmp, cfg))
}

/// Runs `fill` on a sibling temporary folder of `out` (which must not exist yet) and renames
/// it into place, so `out` is either complete or absent; a failed `fill` leaves nothing.
pub(crate) fn write_new_folder<T>(out: &Path, fill: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if out.exists() {
        return Err(DataError::format(
            out,
            "already exists; choose a new directory",
        ));
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
    let tmp = tempdir_in(parent, out)?;
    match fill(&tmp) {
        Ok(value) => {
            std::fs::rename(&tmp, out).map_err(|e| DataError::io(out, e))?;
            Ok(value)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Removes the temporary folders (`.STEM.partial-...`) that interrupted writes of `parent/STEM`
/// left behind; returns how many. Only for a caller that holds the entry's lock (no other
/// process can be writing one of them then).
pub fn remove_partials(parent: &Path, stem: &str) -> usize {
    let prefix = format!(".{stem}.partial-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
        .count()
}

fn tempdir_in(parent: &Path, out: &Path) -> Result<PathBuf> {
    let stem = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("synthrs");
    for k in 0..1000 {
        let candidate = parent.join(format!(".{stem}.partial-{}-{k}", std::process::id()));
        if std::fs::create_dir(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(DataError::format(
        parent,
        "cannot create a temporary directory",
    ))
}

fn write_into(root: &Path, cfg: &SynthConfig) -> Result<SynthSummary> {
    let layout = RrsisDLayout::new(root);
    for dir in [
        layout.images.as_path(),
        layout.refs.parent().expect("has parent"),
    ] {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    let mut w = Writer {
        layout: layout.clone(),
        images: vec![],
        annotations: vec![],
        refs: vec![],
        next_sent: 0,
    };
    let mut summary = SynthSummary::default();
    for (salt, (name, n)) in [("train", cfg.train), ("val", cfg.val), ("test", cfg.test)]
        .into_iter()
        .enumerate()
    {
        let written = w.split(name, n, cfg, salt as u64 + 1)?;
        summary.samples.insert(name.to_string(), written);
    }
    summary.images = w.images.len();
    let categories: Vec<serde_json::Value> = Category::ALL
        .iter()
        .map(|c| serde_json::json!({"id": c.id(), "name": c.coco_name()}))
        .collect();
    let instances = serde_json::json!({
        "images": w.images, "annotations": w.annotations, "categories": categories
    });
    write_file(&layout.instances, instances.to_string().as_bytes())?;
    let refs = serde_pickle::value_to_vec(&Value::List(w.refs), serde_pickle::SerOptions::new())
        .map_err(|e| DataError::format(&layout.refs, format!("pickling refs: {e}")))?;
    write_file(&layout.refs, &refs)?;
    let manifest = Manifest {
        config: cfg.clone(),
        summary: summary.clone(),
    };
    let json = serde_json::to_string_pretty(&manifest).expect("serialisable");
    write_file(&root.join(MANIFEST), json.as_bytes())?;
    Ok(summary)
}

/// Returns the SynthRS set for `cfg` under `cache`, generating it on first use. The directory
/// name is derived from the config, and an existing directory is reused only if its manifest
/// records the same config. The caller holds the entry's lock (stale temporary folders of the
/// entry are removed before it is generated).
pub fn ensure_cached(cache: &Path, cfg: &SynthConfig) -> Result<(PathBuf, bool)> {
    let dir = cached_dir(cache, cfg);
    let manifest = dir.join(MANIFEST);
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest).map_err(|e| DataError::io(&manifest, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| DataError::Json {
            path: manifest.clone(),
            message: e.to_string(),
        })?;
        if m.config == *cfg {
            return Ok((dir, false));
        }
        return Err(DataError::format(
            &manifest,
            "records a different SynthRS config than the directory name says; remove the directory",
        ));
    }
    // The caller holds the entry's lock: what earlier, interrupted writes left can go.
    if let Some(stem) = dir.file_name().and_then(|n| n.to_str()) {
        remove_partials(cache, stem);
    }
    write(&dir, cfg)?;
    Ok((dir, true))
}

/// Version of what the generator writes; part of the cache directory name, so a cached set made
/// by an older generator is never reused. Bump it whenever the output for a config changes.
/// (2: every object of a scene is annotated, not only the referred ones, and every scene has at
/// least `min_objects` objects.)
pub const GENERATOR_VERSION: u32 = 2;

/// The cache directory of a SynthRS config (named after the generator version and every field of
/// the config).
pub fn cached_dir(cache: &Path, cfg: &SynthConfig) -> PathBuf {
    let name = format!(
        "synthrs-v{GENERATOR_VERSION}-{}px-{}-{}-{}-seed{}-o{}to{}-t{}e{}-s{}",
        cfg.image_size,
        cfg.train,
        cfg.val,
        cfg.test,
        cfg.seed,
        cfg.min_objects,
        cfg.max_objects,
        cfg.targets_per_scene,
        cfg.expressions_per_target,
        cfg.object_scale
    );
    cache.join(name)
}
