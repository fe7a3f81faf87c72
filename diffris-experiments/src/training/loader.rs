//! The batches of an [`EncodedSplit`] for burn-train, in a seeded order per epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use diffris_data::batch::epoch_order;

use crate::encoded::{EncodedBatch, EncodedSplit};

/// Batches of an [`EncodedSplit`] for burn-train. In training mode each epoch's order is a
/// permutation drawn from `(seed, epoch)` and the backend RNG (Gumbel noise, dropout) is reseeded
/// from the same pair, so an epoch computes the same thing whether or not the run was resumed.
pub struct EpochLoader<B: Backend> {
    data: Arc<EncodedSplit>,
    range: (usize, usize),
    batch_size: usize,
    /// Shuffle and reseed with this seed (training); `None`: fixed order (evaluation).
    seed: Option<u64>,
    first_epoch: usize,
    calls: Arc<AtomicUsize>,
    device: B::Device,
}

impl<B: Backend> EpochLoader<B> {
    pub fn new(
        data: Arc<EncodedSplit>,
        batch_size: usize,
        seed: Option<u64>,
        first_epoch: usize,
        device: B::Device,
    ) -> Self {
        let n = data.len();
        Self {
            data,
            range: (0, n),
            batch_size: batch_size.max(1),
            seed,
            first_epoch,
            calls: Arc::new(AtomicUsize::new(0)),
            device,
        }
    }
}

/// The seed of epoch `epoch` of a run seeded `seed`.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64)
        .rotate_left(17)
}

struct EpochIter<B: Backend> {
    data: Arc<EncodedSplit>,
    order: Vec<usize>,
    batch_size: usize,
    position: usize,
    device: B::Device,
}

impl<B: Backend> Iterator for EpochIter<B> {
    type Item = EncodedBatch<B>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.order.len() {
            return None;
        }
        let end = (self.position + self.batch_size).min(self.order.len());
        let batch = self
            .data
            .batch(&self.order[self.position..end], &self.device);
        self.position = end;
        Some(batch)
    }
}

impl<B: Backend> DataLoaderIterator<EncodedBatch<B>> for EpochIter<B> {
    fn progress(&self) -> Progress {
        Progress::new(self.position, self.order.len())
    }
}

impl<B: Backend> DataLoader<B, EncodedBatch<B>> for EpochLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<EncodedBatch<B>> + 'a> {
        let epoch = self.first_epoch + self.calls.fetch_add(1, Ordering::SeqCst);
        let (start, end) = self.range;
        let order = match self.seed {
            Some(seed) => {
                B::seed(&self.device, epoch_seed(seed, epoch));
                epoch_order(end - start, seed, epoch)
                    .into_iter()
                    .map(|i| i + start)
                    .collect()
            }
            None => (start..end).collect(),
        };
        Box::new(EpochIter {
            data: self.data.clone(),
            order,
            batch_size: self.batch_size,
            position: 0,
            device: self.device.clone(),
        })
    }

    fn num_items(&self) -> usize {
        self.range.1 - self.range.0
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, EncodedBatch<B>>> {
        Arc::new(Self {
            data: self.data.clone(),
            range: self.range,
            batch_size: self.batch_size,
            seed: self.seed,
            first_epoch: self.first_epoch,
            calls: self.calls.clone(),
            device: device.clone(),
        })
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, EncodedBatch<B>>> {
        let base = self.range.0;
        Arc::new(Self {
            data: self.data.clone(),
            range: (base + start, (base + end).min(self.range.1)),
            batch_size: self.batch_size,
            seed: self.seed,
            first_epoch: self.first_epoch,
            calls: Arc::new(AtomicUsize::new(0)),
            device: self.device.clone(),
        })
    }
}
