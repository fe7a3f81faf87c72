//! The data of the VAE's stage: the images alone, read once at the training size, and the
//! batches burn-train takes from them, each sample with the standard normal values of its
//! posterior draw (`mean + std e`) from its own stream ([`super::draws`]), so the numbers do
//! not depend on how a run is cut into passes or resumed segments.

use std::ops::Range;
use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use diffris_kernels::SdBackend;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::data::{read_square, stream_order};
use super::draws::{normals, sample_seed};
use crate::device::turnstile::Ticket;
use crate::training::loader::PassSource;

/// Images with their draws: a [`PassSource`] of [`ImageBatch`]es.
pub struct ImageSet {
    /// Side of the square images.
    pub size: usize,
    /// Rows of `3 * size * size`, in [-1, 1].
    pub pixels: Vec<f32>,
    /// `[C, h, w]` of one latent (the length of a posterior draw).
    pub latent_dims: [usize; 3],
    /// The run's seed (training: a stream of epochs, each a permutation, and a posterior draw
    /// per sample); `None` for the validation set (its own order, the posterior means).
    pub seed: Option<u64>,
    /// Samples per loader epoch (a segment of `every` optimizer steps in training).
    pub segment_len: usize,
}

/// One pass of the VAE's stage.
#[derive(Clone, Debug)]
pub struct ImageBatch<B: SdBackend> {
    /// `[B, 3, S, S]` in [-1, 1].
    pub images: Tensor<B, 4>,
    /// The standard normal values of each posterior draw, `[B, C, h, w]` (zeros: the means).
    pub draws: Tensor<B, 4>,
    /// This pass's share of its optimizer batch.
    pub loss_weight: f64,
    pub ticket: Option<Ticket>,
}

/// The network inputs of `images`, each centre-cropped to a square and resized to `size`.
pub fn read_images(images: &[PathBuf], size: usize, bar: &ProgressBar) -> anyhow::Result<Vec<f32>> {
    bar.set_length(images.len() as u64);
    let mut pixels = Vec::with_capacity(images.len() * 3 * size * size);
    for path in images {
        pixels.extend(read_square(path, size)?);
        bar.inc(1);
    }
    Ok(pixels)
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.pixels.len() / (3 * self.size * self.size).max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The standard normal values of the posterior draw of the sample at stream position
    /// `position` (zeros for the validation set).
    pub fn draw(&self, position: u64) -> Vec<f32> {
        let n: usize = self.latent_dims.iter().product();
        match self.seed {
            Some(seed) => normals(
                &mut ChaCha8Rng::seed_from_u64(sample_seed(seed, position)),
                n,
            ),
            None => vec![0.0; n],
        }
    }
}

impl<B: SdBackend> PassSource<B> for ImageSet {
    type Batch = ImageBatch<B>;

    fn epoch_len(&self) -> usize {
        match self.seed {
            Some(_) => self.segment_len,
            None => self.len(),
        }
    }

    fn order(&self, seed: Option<u64>, epoch: usize) -> Vec<usize> {
        match (seed, self.seed) {
            (Some(seed), Some(_)) => stream_order(self.len(), seed, self.segment_len, epoch),
            _ => (0..self.len()).collect(),
        }
    }

    fn batch(
        &self,
        samples: &[usize],
        positions: Range<usize>,
        epoch: usize,
        device: &B::Device,
    ) -> ImageBatch<B> {
        let first = match self.seed {
            Some(_) => (epoch * self.segment_len + positions.start) as u64,
            None => positions.start as u64,
        };
        let (n, s, per) = (samples.len(), self.size, 3 * self.size * self.size);
        let pixels: Vec<f32> = samples
            .iter()
            .flat_map(|&row| self.pixels[row * per..(row + 1) * per].iter().copied())
            .collect();
        let draws: Vec<f32> = (0..n).flat_map(|k| self.draw(first + k as u64)).collect();
        let [c, h, w] = self.latent_dims;
        ImageBatch {
            images: Tensor::from_data(TensorData::new(pixels, [n, 3, s, s]), device),
            draws: Tensor::from_data(TensorData::new(draws, [n, c, h, w]), device),
            loss_weight: 1.0,
            ticket: None,
        }
    }

    fn mark(batch: &mut ImageBatch<B>, weight: f64, ticket: Option<Ticket>) {
        batch.loss_weight = weight;
        batch.ticket = ticket;
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn set(seed: Option<u64>) -> ImageSet {
        ImageSet {
            size: 2,
            pixels: (0..3 * 12).map(|v| v as f32 / 36.0).collect(),
            latent_dims: [2, 1, 1],
            seed,
            segment_len: 4,
        }
    }

    /// A batch holds its rows' pixels and the draws of its stream positions: the same values
    /// whichever pass or segment they fall in; the validation set draws nothing.
    #[test]
    fn a_batch_holds_its_rows_and_its_positions_draws() {
        let s = set(Some(7));
        let b: ImageBatch<Flex> =
            PassSource::<Flex>::batch(&s, &[2, 0], 1..3, 1, &Default::default());
        let pixels: Vec<f32> = b.images.into_data().to_vec().unwrap();
        assert_eq!(pixels[..12], s.pixels[24..36]);
        assert_eq!(pixels[12..], s.pixels[..12]);
        let draws: Vec<f32> = b.draws.into_data().to_vec().unwrap();
        // Epoch 1 of segments of 4, positions 1 and 2: stream positions 5 and 6.
        assert_eq!(draws[..2], s.draw(5)[..]);
        assert_eq!(draws[2..], s.draw(6)[..]);
        assert_ne!(s.draw(5), s.draw(6));
        assert_eq!(set(None).draw(5), vec![0.0, 0.0]);
        // The order is the stream's: 3 rows, segments of 4 run through data epochs.
        let order: Vec<usize> = (0..3)
            .flat_map(|k| <ImageSet as PassSource<Flex>>::order(&s, Some(7), k))
            .collect();
        for data_epoch in order.chunks(3) {
            let mut rows = data_epoch.to_vec();
            rows.sort();
            assert_eq!(rows, [0, 1, 2], "each data epoch is a permutation");
        }
    }
}
