//! From samples to tensors: decoding and resizing in worker threads, tokenising, seeded
//! shuffling, and a Burn `Batcher` that stacks items into `[B, ...]` tensors.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use image::RgbImage;

use crate::error::Result;
use crate::sample::Sample;
use crate::tokenizer::{CONTEXT_LENGTH, ClipTokenizer};
use crate::transforms::{image_to_input, resize_nearest};

/// One sample ready for the network.
#[derive(Clone, Debug, PartialEq)]
pub struct RisItem {
    /// `[3, H, W]` in [-1, 1].
    pub image: Vec<f32>,
    /// `[H, W]` in {0, 1}: the ground truth resized with nearest neighbour (`None` for a query
    /// without ground truth: an image and a text given on the command line).
    pub mask: Option<Vec<f32>>,
    /// The 77 CLIP ids.
    pub ids: Vec<u32>,
    /// Index of the first end token.
    pub eos_index: usize,
    pub height: usize,
    pub width: usize,
    /// Index of the sample in its split.
    pub index: usize,
    /// Whether the expression had more text tokens than CLIP's context holds (75), and was cut.
    pub truncated: bool,
}

impl RisItem {
    /// For a query typed by a user: a warning that the expression was cut to CLIP's 75 text
    /// tokens (the model reads no further), when it was.
    pub fn truncation_warning(&self, text: &str) -> Option<String> {
        self.truncated.then(|| {
            let shown: String = text.chars().take(60).collect();
            format!(
                "warning: the expression \"{shown}{}\" is longer than CLIP's 75 text tokens; \
                 only its first 75 tokens are read",
                if shown.len() < text.len() { "..." } else { "" }
            )
        })
    }
}

/// Decodes, resizes and tokenises one sample.
pub fn prepare(
    sample: &Sample,
    index: usize,
    tokenizer: &ClipTokenizer,
    height: usize,
    width: usize,
) -> Result<RisItem> {
    let (image, gt) = sample.load_image_and_mask()?;
    let mask = resize_nearest(&gt.data, gt.height, gt.width, height, width)
        .into_iter()
        .map(|b| b as u8 as f32)
        .collect();
    let mut item = prepare_query(&image, &sample.sentence, tokenizer, height, width)?;
    item.mask = Some(mask);
    item.index = index;
    Ok(item)
}

/// Resizes and tokenises an image and an expression that come without ground truth.
pub fn prepare_query(
    image: &RgbImage,
    text: &str,
    tokenizer: &ClipTokenizer,
    height: usize,
    width: usize,
) -> Result<RisItem> {
    let t = tokenizer.encode(text)?;
    Ok(RisItem {
        image: image_to_input(image, height, width),
        mask: None,
        ids: t.ids,
        eos_index: t.eos_index,
        height,
        width,
        index: 0,
        truncated: t.truncated,
    })
}

/// Prepares `samples[indices]` on `threads` worker threads; results keep the order of
/// `indices`, and the first error (in that order) is returned.
pub fn prepare_all(
    samples: &[Sample],
    indices: &[usize],
    tokenizer: &ClipTokenizer,
    (height, width): (usize, usize),
    threads: usize,
) -> Result<Vec<RisItem>> {
    let threads = threads.max(1).min(indices.len().max(1));
    let chunk = indices.len().div_ceil(threads).max(1);
    let results: Vec<Result<Vec<RisItem>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = indices
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&i| prepare(&samples[i], i, tokenizer, height, width))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a data worker panicked"))
            .collect()
    });
    let mut out = Vec::with_capacity(indices.len());
    for r in results {
        out.extend(r?);
    }
    Ok(out)
}

/// The sample order of one epoch: a permutation of `0..n` drawn from `(seed, epoch)`, the same
/// on every run and machine.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0xA076_1D64_78BD_642F));
    order.shuffle(&mut rng);
    order
}

/// A batch of samples as tensors.
#[derive(Clone, Debug)]
pub struct RisBatch<B: Backend> {
    /// `[B, 3, H, W]` in [-1, 1].
    pub image: Tensor<B, 4>,
    /// `[B, 1, H, W]` in {0, 1}; `None` when an item has no ground truth.
    pub mask: Option<Tensor<B, 4>>,
    /// `[B, 77]`.
    pub ids: Tensor<B, 2, Int>,
    /// `[B]`.
    pub eos_index: Tensor<B, 1, Int>,
    /// Split indices of the samples.
    pub indices: Vec<usize>,
}

/// Stacks [`RisItem`]s (all of one size) into a [`RisBatch`].
#[derive(Clone, Debug, Default)]
pub struct RisBatcher;

impl<B: Backend> Batcher<B, RisItem, RisBatch<B>> for RisBatcher {
    fn batch(&self, items: Vec<RisItem>, device: &B::Device) -> RisBatch<B> {
        let n = items.len();
        let (h, w) = items.first().map_or((0, 0), |i| (i.height, i.width));
        assert!(
            items.iter().all(|i| (i.height, i.width) == (h, w)),
            "every item of a batch has the same size"
        );
        let image: Vec<f32> = items.iter().flat_map(|i| i.image.iter().copied()).collect();
        let mask: Option<Vec<f32>> = items
            .iter()
            .map(|i| i.mask.as_deref())
            .collect::<Option<Vec<&[f32]>>>()
            .map(|m| m.concat());
        let ids: Vec<i64> = items
            .iter()
            .flat_map(|i| i.ids.iter().map(|&x| x as i64))
            .collect();
        let eos: Vec<i64> = items.iter().map(|i| i.eos_index as i64).collect();
        RisBatch {
            image: Tensor::from_data(TensorData::new(image, [n, 3, h, w]), device),
            mask: mask.map(|m| Tensor::from_data(TensorData::new(m, [n, 1, h, w]), device)),
            ids: Tensor::from_data(TensorData::new(ids, [n, CONTEXT_LENGTH]), device),
            eos_index: Tensor::from_data(TensorData::new(eos, [n]), device),
            indices: items.iter().map(|i| i.index).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;

    /// A query past CLIP's 75 text tokens is cut, and says so; one within them does not.
    #[test]
    fn a_query_cut_to_75_tokens_is_announced() {
        let tokenizer = ClipTokenizer::embedded().unwrap();
        let image = image::RgbImage::new(4, 4);
        let short = prepare_query(&image, "the red car", &tokenizer, 4, 4).unwrap();
        assert_eq!(short.truncation_warning("the red car"), None);
        // 80 words of one token each.
        let long_text = vec!["car"; 80].join(" ");
        let long = prepare_query(&image, &long_text, &tokenizer, 4, 4).unwrap();
        let w = long.truncation_warning(&long_text).unwrap();
        assert!(
            w.starts_with("warning: the expression \"car car") && w.contains("...\" is longer"),
            "{w}"
        );
        assert!(w.contains("only its first 75 tokens are read"), "{w}");
        assert_eq!(long.eos_index, 76, "start token and 75 text tokens");
    }

    fn item(index: usize, value: f32, mask: Option<Vec<f32>>) -> RisItem {
        RisItem {
            image: vec![value; 3 * 2 * 2],
            mask,
            ids: (0..CONTEXT_LENGTH as u32)
                .map(|i| i + index as u32)
                .collect(),
            eos_index: 2 + index,
            height: 2,
            width: 2,
            truncated: false,
            index,
        }
    }

    #[test]
    fn items_stack_in_order_into_batch_tensors() {
        let device = Default::default();
        let items = vec![
            item(4, 0.5, Some(vec![1.0, 0.0, 0.0, 1.0])),
            item(9, -0.5, Some(vec![0.0, 1.0, 1.0, 0.0])),
        ];
        let b: RisBatch<Flex> = RisBatcher.batch(items, &device);
        assert_eq!(b.image.dims(), [2, 3, 2, 2]);
        assert_eq!(b.ids.dims(), [2, CONTEXT_LENGTH]);
        assert_eq!(b.indices, vec![4, 9]);
        let image: Vec<f32> = b.image.into_data().iter::<f32>().collect();
        assert_eq!(image[..12], [0.5; 12]);
        assert_eq!(image[12..], [-0.5; 12]);
        let mask: Vec<f32> = b.mask.unwrap().into_data().iter::<f32>().collect();
        assert_eq!(mask, [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
        let ids: Vec<i64> = b.ids.into_data().iter::<i64>().collect();
        assert_eq!((ids[0], ids[CONTEXT_LENGTH]), (4, 9));
        let eos: Vec<i64> = b.eos_index.into_data().iter::<i64>().collect();
        assert_eq!(eos, [6, 11]);
    }

    #[test]
    fn a_batch_without_every_mask_has_none() {
        let device = Default::default();
        let items = vec![item(0, 0.0, Some(vec![1.0; 4])), item(1, 0.0, None)];
        let b: RisBatch<Flex> = RisBatcher.batch(items, &device);
        assert!(b.mask.is_none());
    }
}
