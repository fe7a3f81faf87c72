//! The batches of an [`EncodedSplit`] for burn-train, in a seeded order per epoch, and their
//! split into micro-batches for gradient accumulation.

use diffris_model::ops::SdBackend;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use diffris_data::batch::epoch_order;

use crate::encoded::{EncodedBatch, EncodedSplit};

/// Batches of an [`EncodedSplit`] for burn-train. In training mode each epoch's order is a
/// permutation drawn from `(seed, epoch)` and the backend RNG (Gumbel noise, dropout) is reseeded
/// from the same pair, so an epoch computes the same thing whether or not the run was resumed.
///
/// With gradient accumulation each optimizer batch of `batch_size` samples comes as `K`
/// micro-batches (see [`micro_batches`]), each carrying the share of the batch it holds as its
/// loss weight, so that the summed gradients of the `K` passes are those of the batch's mean loss.
pub struct EpochLoader<B: SdBackend> {
    data: Arc<EncodedSplit>,
    range: (usize, usize),
    batch_size: usize,
    micro_batch: usize,
    /// Shuffle and reseed with this seed (training); `None`: fixed order (evaluation).
    seed: Option<u64>,
    first_epoch: usize,
    calls: Arc<AtomicUsize>,
    device: B::Device,
}

impl<B: SdBackend> EpochLoader<B> {
    /// Batches of `batch_size` samples, each passed as micro-batches of at most `micro_batch`.
    pub fn new(
        data: Arc<EncodedSplit>,
        batch_size: usize,
        micro_batch: usize,
        seed: Option<u64>,
        first_epoch: usize,
        device: B::Device,
    ) -> Self {
        let n = data.len();
        let batch_size = batch_size.max(1);
        Self {
            data,
            range: (0, n),
            batch_size,
            micro_batch: micro_batch.clamp(1, batch_size),
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

/// The passes of one epoch over `n` samples: optimizer batches of `batch_size` samples, each
/// cut into `K = ceil(batch_size / micro_batch)` micro-batches, as `(positions, loss weight)`
/// with the weight the micro-batch's share of its batch.
///
/// A full batch is cut into micro-batches of `micro_batch` (the last one smaller when
/// `micro_batch` does not divide `batch_size`); the epoch's last, smaller batch into `K` parts
/// as even as possible. burn-train applies accumulated gradients after every `K` passes and
/// drops what an epoch leaves over, so every batch must come as exactly `K` passes: a last batch
/// of fewer than `K` samples is left out of the epoch (at most `K - 1` samples, and none
/// without accumulation).
pub fn micro_batches(n: usize, batch_size: usize, micro_batch: usize) -> Vec<(Range<usize>, f64)> {
    let batch_size = batch_size.max(1);
    let micro = micro_batch.clamp(1, batch_size);
    let k = batch_size.div_ceil(micro);
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch_size.min(n - start);
        if len < k {
            break;
        }
        let sizes: Vec<usize> = if len == batch_size {
            (0..k).map(|i| micro.min(len - i * micro)).collect()
        } else {
            (0..k).map(|i| len / k + usize::from(i < len % k)).collect()
        };
        let mut at = start;
        for size in sizes {
            out.push((at..at + size, size as f64 / len as f64));
            at += size;
        }
        start += len;
    }
    out
}

struct EpochIter<B: SdBackend> {
    data: Arc<EncodedSplit>,
    order: Vec<usize>,
    passes: Vec<(Range<usize>, f64)>,
    next: usize,
    device: B::Device,
}

impl<B: SdBackend> Iterator for EpochIter<B> {
    type Item = EncodedBatch<B>;

    fn next(&mut self) -> Option<Self::Item> {
        let (range, weight) = self.passes.get(self.next)?.clone();
        self.next += 1;
        let mut batch = self.data.batch(&self.order[range], &self.device);
        batch.loss_weight = weight;
        Some(batch)
    }
}

impl<B: SdBackend> DataLoaderIterator<EncodedBatch<B>> for EpochIter<B> {
    fn progress(&self) -> Progress {
        let done = self.next.checked_sub(1).map_or(0, |i| self.passes[i].0.end);
        Progress::new(done, self.order.len())
    }
}

impl<B: SdBackend> DataLoader<B, EncodedBatch<B>> for EpochLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<EncodedBatch<B>> + 'a> {
        let epoch = self.first_epoch + self.calls.fetch_add(1, Ordering::SeqCst);
        let (start, end) = self.range;
        let order: Vec<usize> = match self.seed {
            Some(seed) => {
                B::seed(&self.device, epoch_seed(seed, epoch));
                epoch_order(end - start, seed, epoch)
                    .into_iter()
                    .map(|i| i + start)
                    .collect()
            }
            None => (start..end).collect(),
        };
        let passes = micro_batches(order.len(), self.batch_size, self.micro_batch);
        Box::new(EpochIter {
            data: self.data.clone(),
            order,
            passes,
            next: 0,
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
            micro_batch: self.micro_batch,
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
            micro_batch: self.micro_batch,
            seed: self.seed,
            first_epoch: self.first_epoch,
            calls: Arc::new(AtomicUsize::new(0)),
            device: self.device.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(passes: &[(Range<usize>, f64)]) -> Vec<usize> {
        passes.iter().map(|(r, _)| r.len()).collect()
    }

    #[test]
    fn without_accumulation_each_batch_is_one_pass_of_weight_one() {
        let p = micro_batches(10, 4, 4);
        assert_eq!(sizes(&p), [4, 4, 2]);
        assert!(p.iter().all(|(_, w)| *w == 1.0));
        assert_eq!(p[2].0, 8..10);
    }

    #[test]
    fn micro_batches_partition_every_batch_and_their_weights_sum_to_one() {
        // Batch 8 in micro-batches of 3: K = 3 passes of 3, 3, 2; the last batch of 6 samples
        // (22 = 8 + 8 + 6) in three even parts of 2.
        let p = micro_batches(22, 8, 3);
        assert_eq!(sizes(&p), [3, 3, 2, 3, 3, 2, 2, 2, 2]);
        let mut next = 0;
        for (r, _) in &p {
            assert_eq!(r.start, next, "contiguous, in order");
            next = r.end;
        }
        assert_eq!(next, 22, "every sample once");
        for step in p.chunks(3) {
            let total: f64 = step.iter().map(|(_, w)| w).sum();
            assert!((total - 1.0).abs() < 1e-15);
        }
        assert_eq!(p[0].1, 3.0 / 8.0);
        assert_eq!(p[8].1, 2.0 / 6.0);
    }

    #[test]
    fn a_last_batch_smaller_than_k_is_left_out() {
        // Batch 8 in micro-batches of 2: K = 4; 10 = 8 + 2 leaves a batch of 2 < 4 samples.
        let p = micro_batches(10, 8, 2);
        assert_eq!(sizes(&p), [2, 2, 2, 2]);
        assert_eq!(p.last().unwrap().0.end, 8);
    }
}
