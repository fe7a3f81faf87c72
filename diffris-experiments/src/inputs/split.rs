//! An encoded split: the frozen VAE and CLIP outputs and the network-size masks of its samples,
//! one row each, read from the encoded cache's file a batch at a time
//! ([`crate::inputs::encoded_cache`], [`crate::inputs::rows`]), and the batches training and
//! evaluation take from it.

use burn::tensor::{Int, Tensor, TensorData};
use diffris_data::Sample;
use diffris_kernels::SdBackend;

use crate::device::turnstile::Ticket;
use crate::inputs::rows::Rows;

/// Cached encoder outputs and network-size masks of one split: one row per sample, read from
/// the encoded cache's file a batch at a time (see [`crate::inputs::rows`]), or held in memory.
#[derive(Debug)]
pub struct EncodedSplit {
    pub samples: Vec<Sample>,
    pub image_size: (usize, usize),
    /// `[C, h, w]` of one latent.
    pub latent_dims: [usize; 3],
    /// `[T, D]` of one text state.
    pub text_dims: [usize; 2],
    /// Rows of `C*h*w` values, at the frozen stack's precision.
    pub latents: Rows,
    /// Rows of `T*D` values, at the frozen stack's precision.
    pub text: Rows,
    pub eos: Vec<i64>,
    /// Rows of `H*W` ground-truth values at the network size, `{0, 1}` (bytes on disk).
    pub masks: Rows,
    /// How many of the masks hold no foreground pixel (counted when the masks were first read:
    /// for a cached split, in the pass that checks them).
    pub empty_masks: usize,
}

impl EncodedSplit {
    /// A split held in memory, from f32 values one sample after another (tests and small
    /// constructions; encoded splits live in the cache's files).
    #[allow(clippy::too_many_arguments)]
    pub fn from_vecs(
        samples: Vec<Sample>,
        image_size: (usize, usize),
        latent_dims: [usize; 3],
        text_dims: [usize; 2],
        latents: &[f32],
        text: &[f32],
        eos: Vec<i64>,
        masks: &[f32],
    ) -> Self {
        let per = image_size.0 * image_size.1;
        Self {
            samples,
            image_size,
            latent_dims,
            text_dims,
            latents: Rows::from_f32(latent_dims.iter().product(), latents),
            text: Rows::from_f32(text_dims.iter().product(), text),
            masks: Rows::from_f32(per, masks),
            empty_masks: count_empty(per, eos.len(), masks),
            eos,
        }
    }

    pub fn len(&self) -> usize {
        self.eos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.eos.is_empty()
    }

    /// The network-size ground truth of sample `i`, `H*W` values in `{0, 1}`.
    pub fn mask(&self, i: usize) -> anyhow::Result<Vec<f32>> {
        self.masks.row(i)
    }

    /// A warning when every mask of this split (`name`, read from `root`) is empty: most often
    /// masks stored so that no pixel reads as foreground (another encoding or bit depth than
    /// the format's), which would train towards all-background and score 0.
    pub fn empty_mask_warning(&self, name: &str, root: &std::path::Path) -> Option<String> {
        (!self.is_empty() && self.empty_masks == self.len()).then(|| {
            format!(
                "warning: all {} masks of the {name} split of {} are empty (no foreground \
                 pixel at the network size); check how the masks are stored (`diffris data \
                 inspect --overlays N` draws some)",
                self.len(),
                root.display()
            )
        })
    }

    /// The batch of the given sample indices.
    ///
    /// # Panics
    /// When the split's file cannot be read (burn-train's loaders cannot return an error; the
    /// message names the file).
    pub fn batch<B: SdBackend>(&self, indices: &[usize], device: &B::Device) -> EncodedBatch<B> {
        self.try_batch(indices, device)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The batch of the given sample indices, or the error reading its rows.
    pub fn try_batch<B: SdBackend>(
        &self,
        indices: &[usize],
        device: &B::Device,
    ) -> anyhow::Result<EncodedBatch<B>> {
        let n = indices.len();
        let [c, lh, lw] = self.latent_dims;
        let [t, d] = self.text_dims;
        let (h, w) = self.image_size;
        Ok(EncodedBatch {
            latent: Tensor::from_data(
                TensorData::new(self.latents.gather(indices)?, [n, c, lh, lw]),
                device,
            ),
            text: Tensor::from_data(
                TensorData::new(self.text.gather(indices)?, [n, t, d]),
                device,
            ),
            eos: Tensor::from_data(
                TensorData::new(
                    indices.iter().map(|&i| self.eos[i]).collect::<Vec<_>>(),
                    [n],
                ),
                device,
            ),
            mask: Tensor::from_data(
                TensorData::new(self.masks.gather(indices)?, [n, 1, h, w]),
                device,
            ),
            indices: indices.to_vec(),
            loss_weight: 1.0,
            ticket: None,
        })
    }
}

/// A batch of cached encoder outputs.
#[derive(Clone, Debug)]
pub struct EncodedBatch<B: SdBackend> {
    /// `[B, C, h, w]`, already scaled (`C` latent channels: 4 for SD-1.x; `h, w` the input size
    /// over the VAE's downsampling factor: 8 for SD-1.x).
    pub latent: Tensor<B, 4>,
    /// `[B, T, D]` (`T` = 77 CLIP positions).
    pub text: Tensor<B, 3>,
    /// `[B]`.
    pub eos: Tensor<B, 1, Int>,
    /// `[B, 1, H, W]`.
    pub mask: Tensor<B, 4>,
    pub indices: Vec<usize>,
    /// The factor of this batch's loss: 1, or a micro-batch's share of its optimizer batch
    /// under gradient accumulation.
    pub loss_weight: f64,
    /// The pass's place in its epoch when the epoch's passes are shared over several devices:
    /// its forward waits for the passes before it (see [`crate::device::turnstile`]).
    pub ticket: Option<Ticket>,
}

/// How many of the `n` masks of `per` values each in `values` hold no foreground pixel (every
/// value <= 0; with `per` 0, all of them).
pub fn count_empty<T: Copy + Into<f64>>(per: usize, n: usize, values: &[T]) -> usize {
    if per == 0 {
        return n;
    }
    values
        .chunks(per)
        .filter(|m| m.iter().all(|&v| v.into() <= 0.0))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn split(masks: Vec<f32>) -> EncodedSplit {
        let n = masks.len() / 4;
        let sample = Sample {
            id: "s".into(),
            image: PathBuf::from("s.png"),
            mask: diffris_data::MaskSource::File {
                path: PathBuf::from("m.png"),
                threshold: 127,
            },
            sentence: "the object".into(),
            category: None,
            origin: PathBuf::from("test"),
        };
        EncodedSplit::from_vecs(
            vec![sample; n],
            (2, 2),
            [1, 1, 1],
            [1, 1],
            &vec![0.0; n],
            &vec![0.0; n],
            vec![0; n],
            &masks,
        )
    }

    #[test]
    fn a_split_of_empty_masks_is_warned_about() {
        let root = Path::new("/data/RefSegRS");
        // One foreground pixel in the second sample: nothing to warn about.
        let some = split(vec![0., 0., 0., 0., 0., 0., 1., 0.]);
        assert_eq!(some.empty_masks, 1);
        assert_eq!(some.empty_mask_warning("test", root), None);
        let none = split(vec![0.; 8]);
        assert_eq!(none.empty_masks, 2);
        let w = none.empty_mask_warning("test", root).unwrap();
        assert!(
            w.starts_with("warning: all 2 masks of the test split of /data/RefSegRS are empty"),
            "{w}"
        );
        assert_eq!(split(vec![]).empty_mask_warning("test", root), None);
    }
}
