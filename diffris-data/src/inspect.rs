//! What `diffris data inspect` reports: counts per split and category, expression lengths, and
//! image + mask overlays for eyeballing a dataset.

use std::collections::{BTreeMap, BTreeSet};

use image::RgbImage;

use crate::error::Result;
use crate::rle::BinaryMask;
use crate::sample::Sample;
use crate::tokenizer::ClipTokenizer;
use crate::transforms::resize_nearest;

/// Minimum, mean and maximum of a length.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LengthStats {
    pub min: usize,
    pub mean: f64,
    pub max: usize,
}

impl LengthStats {
    fn of(values: &[usize]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        Self {
            min: *values.iter().min().expect("non-empty"),
            mean: values.iter().sum::<usize>() as f64 / values.len() as f64,
            max: *values.iter().max().expect("non-empty"),
        }
    }
}

/// Statistics of one split.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitStats {
    pub samples: usize,
    pub images: usize,
    /// Samples per category (`(not recorded)` when the format has none).
    pub categories: BTreeMap<String, usize>,
    /// Words per expression.
    pub words: LengthStats,
    /// CLIP tokens per expression (without start/end tokens).
    pub tokens: LengthStats,
    /// Expressions longer than the 75 tokens the text encoder reads.
    pub truncated: usize,
}

/// Computes the statistics of a split.
pub fn split_stats(samples: &[Sample], tokenizer: &ClipTokenizer) -> Result<SplitStats> {
    let mut categories = BTreeMap::new();
    let mut words = Vec::with_capacity(samples.len());
    let mut tokens = Vec::with_capacity(samples.len());
    let mut truncated = 0;
    for s in samples {
        let cat = s
            .category
            .clone()
            .unwrap_or_else(|| "(not recorded)".into());
        *categories.entry(cat).or_insert(0) += 1;
        words.push(s.sentence.split_whitespace().count());
        let raw = tokenizer.encode_raw(&s.sentence)?;
        truncated += (raw.len() > 75) as usize;
        tokens.push(raw.len());
    }
    let images: BTreeSet<_> = samples.iter().map(|s| s.image.clone()).collect();
    Ok(SplitStats {
        samples: samples.len(),
        images: images.len(),
        categories,
        words: LengthStats::of(&words),
        tokens: LengthStats::of(&tokens),
        truncated,
    })
}

/// The image with its mask tinted red and outlined (a mask of another size is resized to the
/// image; dataset samples come through [`crate::Sample::load_image_and_mask`], which refuses
/// that).
pub fn overlay(image: &RgbImage, mask: &BinaryMask) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let m = if (mask.height, mask.width) == (h, w) {
        mask.data.clone()
    } else {
        resize_nearest(&mask.data, mask.height, mask.width, h, w)
    };
    let at = |x: usize, y: usize| m[y * w + x];
    let mut out = image.clone();
    for y in 0..h {
        for x in 0..w {
            if !at(x, y) {
                continue;
            }
            let edge = x == 0
                || y == 0
                || x + 1 == w
                || y + 1 == h
                || !at(x - 1, y)
                || !at(x + 1, y)
                || !at(x, y - 1)
                || !at(x, y + 1);
            let p = out.get_pixel_mut(x as u32, y as u32);
            p.0 = if edge {
                [255, 32, 32]
            } else {
                [(p.0[0] as u16 / 2 + 127) as u8, p.0[1] / 2, p.0[2] / 2]
            };
        }
    }
    out
}
