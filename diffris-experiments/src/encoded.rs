//! The frozen VAE and CLIP outputs of a split, computed once per (weights, split, size).
//! DiffRIS adds no noise and no augmentation, so the latents and text states of a sample never
//! change during training: caching them removes the frozen encoders from every training step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use diffris_data::batch::{epoch_order, prepare_all};
use diffris_data::{ClipTokenizer, Sample};
use diffris_model::sd::{ClipTextModel, StableDiffusion, VaeEncoder};
use indicatif::ProgressBar;

/// Cached encoder outputs and network-size masks of one split.
#[derive(Debug)]
pub struct EncodedSplit {
    pub samples: Vec<Sample>,
    pub image_size: (usize, usize),
    /// `[C, h, w]` of one latent.
    pub latent_dims: [usize; 3],
    /// `[T, D]` of one text state.
    pub text_dims: [usize; 2],
    pub latents: Vec<f32>,
    pub text: Vec<f32>,
    pub eos: Vec<i64>,
    /// Ground truth at the network size, `{0, 1}`.
    pub masks: Vec<f32>,
}

impl EncodedSplit {
    pub fn len(&self) -> usize {
        self.eos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.eos.is_empty()
    }

    /// Decodes, tokenises and encodes every sample, in batches of `batch` on `device`, split
    /// into `threads` contiguous parts encoded at once (each part on its own thread with its
    /// own handle on the frozen weights). A sample's numbers do not depend on the thread count:
    /// the batches are the same either way.
    #[allow(clippy::too_many_arguments)]
    pub fn encode<B: Backend>(
        samples: Vec<Sample>,
        tokenizer: &ClipTokenizer,
        sd: &StableDiffusion<B>,
        image_size: (usize, usize),
        latent_scale: f64,
        device: &B::Device,
        batch: usize,
        threads: usize,
        bar: &ProgressBar,
    ) -> anyhow::Result<Self> {
        let indices: Vec<usize> = (0..samples.len()).collect();
        let chunks: Vec<&[usize]> = indices.chunks(batch.max(1)).collect();
        bar.set_length(samples.len() as u64);
        let workers = threads.clamp(1, chunks.len().max(1));
        let per_worker = chunks.len().div_ceil(workers).max(1);
        let job = Encoder {
            samples: &samples,
            tokenizer,
            image_size,
            latent_scale,
            device,
            bar,
        };
        let parts: Vec<anyhow::Result<Part>> = if workers == 1 {
            vec![job.run(&chunks, &sd.vae, &sd.text_encoder)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .chunks(per_worker)
                    .map(|mine| {
                        let (vae, clip) = (sd.vae.clone(), sd.text_encoder.clone());
                        let job = &job;
                        scope.spawn(move || job.run(mine, &vae, &clip))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("an encoding thread panicked"))
                    .collect()
            })
        };
        let mut out = EncodedSplit {
            samples: vec![],
            image_size,
            latent_dims: [0; 3],
            text_dims: [0; 2],
            latents: vec![],
            text: vec![],
            eos: vec![],
            masks: vec![],
        };
        for part in parts {
            let part = part?;
            out.latent_dims = part.latent_dims;
            out.text_dims = part.text_dims;
            out.latents.extend(part.latents);
            out.text.extend(part.text);
            out.eos.extend(part.eos);
            out.masks.extend(part.masks);
        }
        out.samples = samples;
        Ok(out)
    }

    /// The batch of the given sample indices.
    pub fn batch<B: Backend>(&self, indices: &[usize], device: &B::Device) -> EncodedBatch<B> {
        let n = indices.len();
        let [c, lh, lw] = self.latent_dims;
        let [t, d] = self.text_dims;
        let (h, w) = self.image_size;
        let gather = |src: &[f32], per: usize| -> Vec<f32> {
            indices
                .iter()
                .flat_map(|&i| src[i * per..(i + 1) * per].iter().copied())
                .collect()
        };
        EncodedBatch {
            latent: Tensor::from_data(
                TensorData::new(gather(&self.latents, c * lh * lw), [n, c, lh, lw]),
                device,
            ),
            text: Tensor::from_data(
                TensorData::new(gather(&self.text, t * d), [n, t, d]),
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
                TensorData::new(gather(&self.masks, h * w), [n, 1, h, w]),
                device,
            ),
            indices: indices.to_vec(),
        }
    }
}

/// A batch of cached encoder outputs.
#[derive(Clone, Debug)]
pub struct EncodedBatch<B: Backend> {
    /// `[B, 4, h, w]`, already scaled.
    pub latent: Tensor<B, 4>,
    /// `[B, 77, D]`.
    pub text: Tensor<B, 3>,
    /// `[B]`.
    pub eos: Tensor<B, 1, Int>,
    /// `[B, 1, H, W]`.
    pub mask: Tensor<B, 4>,
    pub indices: Vec<usize>,
}

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

/// What one encoding thread shares with the others.
struct Encoder<'a, B: Backend> {
    samples: &'a [Sample],
    tokenizer: &'a ClipTokenizer,
    image_size: (usize, usize),
    latent_scale: f64,
    device: &'a B::Device,
    bar: &'a ProgressBar,
}

/// The encodings of a contiguous run of batches.
#[derive(Default)]
struct Part {
    latent_dims: [usize; 3],
    text_dims: [usize; 2],
    latents: Vec<f32>,
    text: Vec<f32>,
    eos: Vec<i64>,
    masks: Vec<f32>,
}

impl<B: Backend> Encoder<'_, B> {
    /// Encodes the batches `chunks` (sample indices) in order.
    fn run(
        &self,
        chunks: &[&[usize]],
        vae: &VaeEncoder<B>,
        clip: &ClipTextModel<B>,
    ) -> anyhow::Result<Part> {
        let (h, w) = self.image_size;
        let vocab = clip.config().vocab_size;
        let mut out = Part::default();
        for chunk in chunks {
            let items = prepare_all(self.samples, chunk, self.tokenizer, (h, w), 1)?;
            let n = items.len();
            let pixels: Vec<f32> = items.iter().flat_map(|i| i.image.iter().copied()).collect();
            let ids: Vec<i64> = items
                .iter()
                .flat_map(|i| i.ids.iter().map(|&x| x as i64))
                .collect();
            if let Some(&m) = ids.iter().max() {
                anyhow::ensure!(
                    (m as usize) < vocab,
                    "token id {m} is outside the text encoder's {vocab} embeddings"
                );
            }
            let image =
                Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, h, w]), self.device);
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, 77]), self.device);
            let latent = vae.forward(image).mul_scalar(self.latent_scale);
            let text = clip.forward(ids);
            let [_, c, lh, lw] = latent.dims();
            let [_, t, d] = text.dims();
            out.latent_dims = [c, lh, lw];
            out.text_dims = [t, d];
            out.latents.extend(latent.into_data().iter::<f32>());
            out.text.extend(text.into_data().iter::<f32>());
            for item in items {
                out.eos.push(item.eos_index as i64);
                out.masks.extend(item.mask);
            }
            self.bar.inc(n as u64);
        }
        Ok(out)
    }
}
