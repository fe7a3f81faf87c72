//! SynthRS scenes with their captions ([`super::caption`]) written as an image-caption folder in
//! the layout [`crate::formats::captions`] reads (diffusers' `metadata.jsonl`): the data of
//! generative pre-training on SynthRS.
//!
//! The scenes come from their own random stream (the seed mixed with a salt no referring split
//! uses), so a caption set never repeats the images of a referring set's test split.

use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::caption::caption;
use super::scene;
use crate::error::{DataError, Result};
use crate::formats::captions::METADATA;

/// How a caption set is generated. Equal configs give byte-identical folders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptionSetConfig {
    /// Side of the square images in pixels.
    pub image_size: usize,
    pub images: usize,
    pub seed: u64,
    /// Objects per scene, inclusive range.
    pub min_objects: usize,
    pub max_objects: usize,
    /// Multiplier of every object size (see [`super::SynthConfig::object_scale`]).
    pub object_scale: f32,
}

/// The salt of the caption sets' random stream (the referring splits use 1, 2 and 3).
const SALT: u64 = 0xCA97_1045;

/// Name of the file recording the config a folder was generated with.
pub const MANIFEST: &str = "caption_set.json";

/// Generates a caption set into `out`, which must not exist yet: `images/NNNNN.png` (lossless,
/// so the pixels are the scene's) and `metadata.jsonl`. Written to a sibling temporary folder
/// and renamed into place, so `out` is either complete or absent.
pub fn write_caption_set(out: &Path, cfg: &CaptionSetConfig) -> Result<()> {
    if cfg.image_size < 32 || cfg.min_objects == 0 || cfg.max_objects < cfg.min_objects {
        return Err(DataError::format(
            out,
            "a caption set needs image_size >= 32 and 1 <= min_objects <= max_objects",
        ));
    }
    super::write_new_folder(out, |tmp| write_into(tmp, cfg))
}

/// The cache folder of a caption set config (named after the generator version and every
/// field).
pub fn cached_caption_dir(cache: &Path, cfg: &CaptionSetConfig) -> PathBuf {
    cache.join(format!(
        "synthrs-captions-v{}-{}px-{}-seed{}-o{}to{}-s{}",
        super::GENERATOR_VERSION,
        cfg.image_size,
        cfg.images,
        cfg.seed,
        cfg.min_objects,
        cfg.max_objects,
        cfg.object_scale
    ))
}

fn write_into(root: &Path, cfg: &CaptionSetConfig) -> Result<()> {
    let images = root.join("images");
    std::fs::create_dir_all(&images).map_err(|e| DataError::io(&images, e))?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ SALT);
    let mut lines = String::new();
    let mut crowded = 0;
    let mut written = 0;
    while written < cfg.images {
        let n = rng.random_range(cfg.min_objects..=cfg.max_objects);
        let scene = scene::generate(&mut rng, cfg.image_size, n, cfg.object_scale);
        if scene.objects.len() < cfg.min_objects {
            crowded += 1;
            if crowded > 1000 {
                return Err(DataError::format(
                    root,
                    format!(
                        "could not place {} objects in a {}px image 1000 times; lower \
                         object_scale ({}) or min_objects",
                        cfg.min_objects, cfg.image_size, cfg.object_scale
                    ),
                ));
            }
            continue;
        }
        crowded = 0;
        written += 1;
        let file_name = format!("images/{written:05}.png");
        let path = root.join(&file_name);
        let size = cfg.image_size as u32;
        image::save_buffer(&path, &scene.pixels, size, size, image::ColorType::Rgb8).map_err(
            |e| DataError::Image {
                path: path.clone(),
                message: e.to_string(),
            },
        )?;
        let line = serde_json::json!({"file_name": file_name, "text": caption(&scene)});
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    let metadata = root.join(METADATA);
    std::fs::write(&metadata, lines).map_err(|e| DataError::io(&metadata, e))?;
    let manifest = root.join(MANIFEST);
    let json = serde_json::to_string_pretty(cfg).expect("serialisable");
    std::fs::write(&manifest, json).map_err(|e| DataError::io(&manifest, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::captions::read_captions;

    fn cfg(images: usize, seed: u64) -> CaptionSetConfig {
        CaptionSetConfig {
            image_size: 64,
            images,
            seed,
            min_objects: 3,
            max_objects: 4,
            object_scale: 4.0,
        }
    }

    /// The folder reads back through the caption reader: every image exists at the set's size,
    /// every caption names as many objects as its scene holds (one `;`-separated phrase each),
    /// the same config writes the same bytes, another seed other images.
    #[test]
    fn a_caption_set_reads_back_and_is_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        write_caption_set(&a, &cfg(5, 0)).unwrap();
        let pairs = read_captions(&a).unwrap();
        assert_eq!(pairs.len(), 5);
        for p in &pairs {
            let img = image::open(&p.image).unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
            let objects = p.text.split(": ").nth(1).unwrap().split("; ").count();
            assert!((3..=4).contains(&objects), "{}", p.text);
        }
        let b = dir.path().join("b");
        write_caption_set(&b, &cfg(5, 0)).unwrap();
        for name in [METADATA, "images/00003.png"] {
            assert_eq!(
                std::fs::read(a.join(name)).unwrap(),
                std::fs::read(b.join(name)).unwrap()
            );
        }
        let c = dir.path().join("c");
        write_caption_set(&c, &cfg(5, 1)).unwrap();
        assert_ne!(
            std::fs::read(a.join(METADATA)).unwrap(),
            std::fs::read(c.join(METADATA)).unwrap()
        );
        assert!(
            write_caption_set(&a, &cfg(5, 0)).is_err(),
            "an existing folder"
        );
    }
}
