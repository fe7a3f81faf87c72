//! The batches of a dataset for burn-train (an [`EncodedSplit`], or any [`PassSource`]), in a
//! seeded order per epoch, their split into micro-batches for gradient accumulation, and their
//! share-out over several devices.

use diffris_kernels::SdBackend;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use diffris_data::batch::epoch_order;

use crate::device::turnstile::{Rounds, Ticket, Turnstile};
use crate::inputs::split::{EncodedBatch, EncodedSplit};

/// What an [`EpochLoader`] cuts into passes: a dataset that orders the samples of each epoch
/// and builds the batch of a pass.
pub trait PassSource<B: SdBackend>: Send + Sync + 'static {
    type Batch: Send + 'static;

    /// Samples in one epoch.
    fn epoch_len(&self) -> usize;

    /// The samples of epoch `epoch` in their order: with a seed (training) drawn from it and
    /// the epoch, without one (evaluation) the dataset's own order. `epoch_len` entries.
    fn order(&self, seed: Option<u64>, epoch: usize) -> Vec<usize>;

    /// The batch of `samples`, which sit at `positions` of epoch `epoch`'s order.
    fn batch(
        &self,
        samples: &[usize],
        positions: Range<usize>,
        epoch: usize,
        device: &B::Device,
    ) -> Self::Batch;

    /// Gives `batch` its loss weight and, when the epoch is shared over devices, its ticket.
    fn mark(batch: &mut Self::Batch, weight: f64, ticket: Option<Ticket>);
}

impl<B: SdBackend> PassSource<B> for EncodedSplit {
    type Batch = EncodedBatch<B>;

    fn epoch_len(&self) -> usize {
        self.len()
    }

    fn order(&self, seed: Option<u64>, epoch: usize) -> Vec<usize> {
        match seed {
            Some(seed) => epoch_order(self.len(), seed, epoch),
            None => (0..self.len()).collect(),
        }
    }

    fn batch(
        &self,
        samples: &[usize],
        _positions: Range<usize>,
        _epoch: usize,
        device: &B::Device,
    ) -> EncodedBatch<B> {
        EncodedSplit::batch(self, samples, device)
    }

    fn mark(batch: &mut EncodedBatch<B>, weight: f64, ticket: Option<Ticket>) {
        batch.loss_weight = weight;
        batch.ticket = ticket;
    }
}

/// Batches of an [`EncodedSplit`] for burn-train. In training mode each epoch's order is a
/// permutation drawn from `(seed, epoch)` and the backend RNG (Gumbel noise, dropout) is reseeded
/// from the same pair, so an epoch computes the same thing whether or not the run was resumed.
///
/// With gradient accumulation each optimizer batch of `batch_size` samples comes as several
/// micro-batches (see [`micro_batches`]), each carrying the share of the batch it holds as its
/// loss weight, so that the summed gradients of the passes are those of the batch's mean loss.
///
/// With `devices > 1` the loader is meant for burn-train's `MultiDevice` strategy, which cuts
/// the loader in `devices` parts with [`DataLoader::slice`] and gives one to each device's
/// worker. Burn means the parts as contiguous ranges of the dataset; here part `i` is device
/// `i`'s share of every optimizer batch instead: the plan of one epoch is the same for any
/// number of devices, and device `i` runs its passes `i, i + devices, i + 2 devices, ...`. Each
/// pass carries a [`Ticket`] so that the workers' forwards draw from the process-wide RNG in the
/// plan's order (see [`crate::device::turnstile`]).
pub struct EpochLoader<B: SdBackend, D: PassSource<B> = EncodedSplit> {
    data: Arc<D>,
    batch_size: usize,
    micro_batch: usize,
    /// Devices the plan is shared over, and the one this loader feeds (`None`: all passes).
    devices: usize,
    shard: Option<usize>,
    turnstile: Arc<Turnstile>,
    /// Shuffle and reseed with this seed (training); `None`: fixed order (evaluation).
    seed: Option<u64>,
    first_epoch: usize,
    calls: Arc<AtomicUsize>,
    device: B::Device,
}

impl<B: SdBackend, D: PassSource<B>> EpochLoader<B, D> {
    /// Batches of `batch_size` samples, each passed as micro-batches of at most `micro_batch`.
    pub fn new(
        data: Arc<D>,
        batch_size: usize,
        micro_batch: usize,
        seed: Option<u64>,
        first_epoch: usize,
        device: B::Device,
    ) -> Self {
        let batch_size = batch_size.max(1);
        Self {
            data,
            batch_size,
            micro_batch: micro_batch.clamp(1, batch_size),
            devices: 1,
            shard: None,
            turnstile: Turnstile::new(),
            seed,
            first_epoch,
            calls: Arc::new(AtomicUsize::new(0)),
            device,
        }
    }

    /// The same batches shared over `devices` devices, at most `micro_batch` samples per pass
    /// on each (see [`micro_batches`]).
    pub fn shared_over(mut self, devices: usize) -> Self {
        self.devices = devices.max(1);
        self
    }

    /// Under Burn's DDP: every pass first meets the other workers at `rounds` (see
    /// [`Rounds`]).
    pub fn in_rounds(mut self, rounds: Arc<Rounds>) -> Self {
        self.turnstile = Turnstile::with_rounds(rounds);
        self
    }

    /// This loader's passes of `plan`: all of them, or its device's share.
    fn own_passes(&self, plan: Vec<(Range<usize>, f64)>) -> Vec<(usize, Range<usize>, f64)> {
        plan.into_iter()
            .enumerate()
            .filter(|(q, _)| self.shard.is_none_or(|s| q % self.devices == s))
            .map(|(q, (r, w))| (q, r, w))
            .collect()
    }
}

/// The seed of epoch `epoch` of a run seeded `seed`.
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch as u64)
        .rotate_left(17)
}

/// Passes per device per optimizer step: `ceil(batch_size / (devices * micro_batch))`.
pub fn passes_per_device(batch_size: usize, micro_batch: usize, devices: usize) -> usize {
    let batch_size = batch_size.max(1);
    batch_size.div_ceil(devices.max(1) * micro_batch.clamp(1, batch_size))
}

/// The most samples one pass holds in a full batch (see [`micro_batches`]).
pub fn largest_pass(batch_size: usize, micro_batch: usize, devices: usize) -> usize {
    let batch_size = batch_size.max(1);
    let parts = devices.max(1) * passes_per_device(batch_size, micro_batch, devices);
    if devices <= 1 {
        micro_batch.clamp(1, batch_size)
    } else {
        batch_size.div_ceil(parts)
    }
}

/// The passes of one epoch over `n` samples: optimizer batches of `batch_size` samples, each
/// cut into `P = devices * K` micro-batches (`K` from [`passes_per_device`]), as
/// `(positions, loss weight)` with the weight the micro-batch's share of its batch.
///
/// On one device a full batch is cut into micro-batches of `micro_batch` (the last one smaller
/// when `micro_batch` does not divide `batch_size`); on several, into `P` parts as even as
/// possible; the epoch's last, smaller batch into `P` parts as even as possible. burn-train
/// applies accumulated gradients after every `K` passes of each device and drops what an epoch
/// leaves over, so every batch must come as exactly `P` passes: a last batch of fewer than `P`
/// samples is left out of the epoch (at most `P - 1` samples, and none on one device without
/// accumulation).
pub fn micro_batches(
    n: usize,
    batch_size: usize,
    micro_batch: usize,
    devices: usize,
) -> Vec<(Range<usize>, f64)> {
    let batch_size = batch_size.max(1);
    let micro = micro_batch.clamp(1, batch_size);
    let devices = devices.max(1);
    let parts = devices * passes_per_device(batch_size, micro, devices);
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = batch_size.min(n - start);
        if len < parts {
            break;
        }
        let sizes: Vec<usize> = if len == batch_size && devices == 1 {
            (0..parts).map(|i| micro.min(len - i * micro)).collect()
        } else {
            (0..parts)
                .map(|i| len / parts + usize::from(i < len % parts))
                .collect()
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

struct EpochIter<B: SdBackend, D: PassSource<B>> {
    data: Arc<D>,
    order: Vec<usize>,
    /// `(pass index in the epoch's plan, positions, loss weight)`.
    passes: Vec<(usize, Range<usize>, f64)>,
    next: usize,
    /// Samples of this iterator's passes, and of those already yielded.
    total: usize,
    done: usize,
    /// The epoch, and the turnstile when the plan is shared over several devices.
    epoch: usize,
    turnstile: Option<Arc<Turnstile>>,
    device: B::Device,
}

impl<B: SdBackend, D: PassSource<B>> Iterator for EpochIter<B, D> {
    type Item = D::Batch;

    fn next(&mut self) -> Option<Self::Item> {
        let (pass, range, weight) = self.passes.get(self.next)?.clone();
        self.next += 1;
        self.done += range.len();
        let mut batch =
            self.data
                .batch(&self.order[range.clone()], range, self.epoch, &self.device);
        let ticket = self.turnstile.as_ref().map(|t| Ticket {
            turnstile: t.clone(),
            epoch: self.epoch,
            pass,
        });
        D::mark(&mut batch, weight, ticket);
        Some(batch)
    }
}

impl<B: SdBackend, D: PassSource<B>> DataLoaderIterator<D::Batch> for EpochIter<B, D> {
    fn progress(&self) -> Progress {
        Progress::new(self.done, self.total)
    }
}

impl<B: SdBackend, D: PassSource<B>> DataLoader<B, D::Batch> for EpochLoader<B, D> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<D::Batch> + 'a> {
        let epoch = self.first_epoch + self.calls.fetch_add(1, Ordering::SeqCst);
        let n = self.data.epoch_len();
        let order = self.data.order(self.seed, epoch);
        debug_assert_eq!(order.len(), n);
        if let Some(seed) = self.seed {
            // One reseed per epoch, by the part holding the plan's first pass: with Burn's DDP
            // every device's worker starts its epoch on its own thread, and a reseed by another
            // part could land after that pass has begun drawing. The other parts' passes wait
            // for it (their tickets), so all draws follow this one.
            if self.shard.is_none_or(|s| s == 0) {
                B::seed(&self.device, epoch_seed(seed, epoch));
            }
        }
        let plan = micro_batches(n, self.batch_size, self.micro_batch, self.devices);
        let passes = self.own_passes(plan);
        let turnstile = (self.devices > 1).then(|| {
            self.turnstile.open_epoch(epoch);
            self.turnstile.clone()
        });
        Box::new(EpochIter {
            data: self.data.clone(),
            total: match self.shard {
                None => order.len(),
                Some(_) => passes.iter().map(|p| p.1.len()).sum(),
            },
            order,
            passes,
            next: 0,
            done: 0,
            epoch,
            turnstile,
            device: self.device.clone(),
        })
    }

    fn num_items(&self) -> usize {
        self.data.epoch_len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, D::Batch>> {
        Arc::new(self.with(self.shard, self.calls.clone(), device.clone()))
    }

    /// Device `i`'s share (see [`EpochLoader`]), for the `i`-th of the parts burn-train's
    /// `split_dataloader` asks for: `[i * (n / devices), ...)`, the last part up to `n`.
    fn slice(&self, start: usize, _end: usize) -> Arc<dyn DataLoader<B, D::Batch>> {
        let step = self.data.epoch_len() / self.devices;
        let shard = match step {
            0 => 0,
            step => (start / step).min(self.devices - 1),
        };
        assert!(
            self.devices > 1 && self.shard.is_none() && shard * step == start,
            "EpochLoader::slice({start}, _) is not one of the {} parts of {} samples that \
             burn-train's split_dataloader asks for",
            self.devices,
            self.data.epoch_len()
        );
        Arc::new(self.with(
            Some(shard),
            Arc::new(AtomicUsize::new(0)),
            self.device.clone(),
        ))
    }
}

impl<B: SdBackend, D: PassSource<B>> EpochLoader<B, D> {
    fn with(&self, shard: Option<usize>, calls: Arc<AtomicUsize>, device: B::Device) -> Self {
        Self {
            data: self.data.clone(),
            batch_size: self.batch_size,
            micro_batch: self.micro_batch,
            devices: self.devices,
            shard,
            turnstile: self.turnstile.clone(),
            seed: self.seed,
            first_epoch: self.first_epoch,
            calls,
            device,
        }
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
        let p = micro_batches(10, 4, 4, 1);
        assert_eq!(sizes(&p), [4, 4, 2]);
        assert!(p.iter().all(|(_, w)| *w == 1.0));
        assert_eq!(p[2].0, 8..10);
    }

    #[test]
    fn micro_batches_partition_every_batch_and_their_weights_sum_to_one() {
        // Batch 8 in micro-batches of 3: K = 3 passes of 3, 3, 2; the last batch of 6 samples
        // (22 = 8 + 8 + 6) in three even parts of 2.
        let p = micro_batches(22, 8, 3, 1);
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
        let p = micro_batches(10, 8, 2, 1);
        assert_eq!(sizes(&p), [2, 2, 2, 2]);
        assert_eq!(p.last().unwrap().0.end, 8);
    }

    #[test]
    fn on_several_devices_every_batch_is_cut_in_a_multiple_of_the_device_count() {
        // Batch 8 on 2 devices, at most 3 per pass: K = ceil(8 / 6) = 2 passes per device, so
        // P = 4 even parts of 2; the last batch of 6 (22 = 8 + 8 + 6) in parts of 2, 2, 1, 1.
        assert_eq!(passes_per_device(8, 3, 2), 2);
        let p = micro_batches(22, 8, 3, 2);
        assert_eq!(sizes(&p), [2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1]);
        assert_eq!(p.last().unwrap().0.end, 22);
        for step in p.chunks(4) {
            let total: f64 = step.iter().map(|(_, w)| w).sum();
            assert!((total - 1.0).abs() < 1e-15);
        }
        // Batch 4 in micro-batches of 2: one pass per device on 2 devices, the same two
        // micro-batches as two passes on one device.
        assert_eq!(micro_batches(8, 4, 2, 2), micro_batches(8, 4, 2, 1));
        // 8 devices, batch 32, micro-batch 4 (the paper's setting): one pass of 4 per device.
        assert_eq!(passes_per_device(32, 4, 8), 1);
        assert_eq!(sizes(&micro_batches(32, 32, 4, 8)), [4; 8]);
        // A last batch smaller than P is left out: 9 = 4 + 4 + 1 on 2 devices.
        assert_eq!(micro_batches(9, 4, 2, 2).last().unwrap().0.end, 8);
    }

    #[cfg(feature = "flex")]
    mod shares {
        use super::super::*;
        use burn::backend::Flex;
        use burn::data::dataloader::split::split_dataloader;
        use std::path::PathBuf;

        fn split(n: usize) -> Arc<EncodedSplit> {
            let sample = diffris_data::Sample {
                id: "s".into(),
                image: PathBuf::from("s.png"),
                mask: diffris_data::MaskSource::File {
                    path: PathBuf::from("m.png"),
                    threshold: 127,
                },
                sentence: "x".into(),
                category: None,
                origin: PathBuf::from("test"),
            };
            Arc::new(EncodedSplit::from_vecs(
                vec![sample; n],
                (1, 1),
                [1, 1, 1],
                [1, 1],
                &vec![0.0; n],
                &vec![0.0; n],
                vec![0; n],
                &vec![0.0; n],
            ))
        }

        /// `(plan index, sample indices, weight)` of every pass of one epoch of `loader`.
        fn passes(loader: &dyn DataLoader<Flex, EncodedBatch<Flex>>) -> Vec<(usize, Vec<usize>)> {
            loader
                .iter()
                .map(|b| (b.ticket.map_or(usize::MAX, |t| t.pass), b.indices))
                .collect()
        }

        /// burn-train's own split gives each device its share of every batch, and the shares
        /// taken in turn are the one-device plan: the same samples in the same passes.
        #[test]
        fn burn_trains_split_gives_each_device_its_share_of_every_batch() {
            let data = split(23);
            let whole =
                EpochLoader::<Flex>::new(data.clone(), 8, 2, Some(4), 0, Default::default());
            let one: Vec<Vec<usize>> = whole.iter().map(|b| b.indices).collect();
            assert_eq!(one.len(), 12, "three batches (8, 8, 7 samples) of 4 passes");

            for devices in [2, 3] {
                let loader =
                    EpochLoader::<Flex>::new(data.clone(), 8, 2, Some(4), 0, Default::default())
                        .shared_over(devices);
                let parts = split_dataloader(Arc::new(loader), &vec![Default::default(); devices]);
                let shares: Vec<_> = parts.iter().map(|p| passes(p.as_ref())).collect();
                let mut merged: Vec<(usize, Vec<usize>)> = shares.concat();
                for (i, share) in shares.iter().enumerate() {
                    assert!(
                        share.iter().all(|(q, _)| q % devices == i),
                        "{devices}: {share:?}"
                    );
                }
                merged.sort();
                let plan = micro_batches(23, 8, 2, devices);
                assert_eq!(merged.len(), plan.len());
                let samples: Vec<usize> = merged.iter().flat_map(|(_, s)| s.clone()).collect();
                let expected: Vec<usize> = one.concat()[..plan.last().unwrap().0.end].to_vec();
                assert_eq!(samples, expected, "{devices} devices: the one-device order");
                if devices == 2 {
                    let two: Vec<Vec<usize>> = merged.into_iter().map(|(_, s)| s).collect();
                    assert_eq!(
                        two[..8],
                        one[..8],
                        "batch 8, micro-batch 2: the same passes"
                    );
                }
            }
        }
    }
}
