//! The frozen VAE and CLIP outputs of a split, computed once per (weights, split, size).
//! DiffRIS adds no noise and no augmentation, so the latents and text states of a sample never
//! change during training: caching them removes the frozen encoders from every training step.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Int, Tensor, TensorData};
use diffris_data::batch::{RisBatch, RisBatcher, prepare_all};
use diffris_data::{ClipTokenizer, Sample};
use diffris_model::diffris::{encode_latent, encode_text};
use diffris_model::ops::SdBackend;
use diffris_model::sd::{ClipTextModel, StableDiffusion, VaeEncoder};
use indicatif::ProgressBar;

use crate::frozen::check_vocab;

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

    /// The samples whose network-size mask holds no foreground pixel.
    pub fn empty_masks(&self) -> usize {
        let (h, w) = self.image_size;
        if h * w == 0 {
            return self.len();
        }
        self.masks
            .chunks(h * w)
            .filter(|m| m.iter().all(|&v| v <= 0.0))
            .count()
    }

    /// A warning when every mask of this split (`name`, read from `root`) is empty: most often
    /// masks stored so that no pixel reads as foreground (another encoding or bit depth than
    /// the format's), which would train towards all-background and score 0.
    pub fn empty_mask_warning(&self, name: &str, root: &std::path::Path) -> Option<String> {
        (!self.is_empty() && self.empty_masks() == self.len()).then(|| {
            format!(
                "warning: all {} masks of the {name} split of {} are empty (no foreground \
                 pixel at the network size); check how the masks are stored (`diffris data \
                 inspect --overlays N` draws some)",
                self.len(),
                root.display()
            )
        })
    }

    /// Decodes, tokenises and encodes every sample, in batches of `batch` on `device`, split
    /// into `threads` contiguous parts encoded at once (each part on its own thread with its
    /// own handle on the frozen weights). A sample's numbers do not depend on the thread count:
    /// the batches are the same either way.
    #[allow(clippy::too_many_arguments)]
    pub fn encode<B: SdBackend>(
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
    pub fn batch<B: SdBackend>(&self, indices: &[usize], device: &B::Device) -> EncodedBatch<B> {
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
            loss_weight: 1.0,
            ticket: None,
        }
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
    /// its forward waits for the passes before it (see [`crate::training::turnstile`]).
    pub ticket: Option<crate::training::turnstile::Ticket>,
}

/// What one encoding thread shares with the others.
struct Encoder<'a, B: SdBackend> {
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

impl<B: SdBackend> Encoder<'_, B> {
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
            for item in &items {
                check_vocab(&item.ids, vocab)?;
            }
            let n = items.len();
            let eos: Vec<i64> = items.iter().map(|i| i.eos_index as i64).collect();
            let masks: Vec<f32> = items
                .iter()
                .flat_map(|i| i.mask.iter().flatten().copied())
                .collect();
            let batch: RisBatch<B> = RisBatcher.batch(items, self.device);
            let (image, ids) = (batch.image, batch.ids);
            let latent = encode_latent(vae, image, self.latent_scale);
            let text = encode_text(clip, ids);
            let [_, c, lh, lw] = latent.dims();
            let [_, t, d] = text.dims();
            out.latent_dims = [c, lh, lw];
            out.text_dims = [t, d];
            out.latents.extend(latent.into_data().iter::<f32>());
            out.text.extend(text.into_data().iter::<f32>());
            out.eos.extend(eos);
            out.masks.extend(masks);
            self.bar.inc(n as u64);
        }
        Ok(out)
    }
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
        EncodedSplit {
            samples: vec![sample; n],
            image_size: (2, 2),
            latent_dims: [1, 1, 1],
            text_dims: [1, 1],
            latents: vec![0.0; n],
            text: vec![0.0; n],
            eos: vec![0; n],
            masks,
        }
    }

    #[test]
    fn a_split_of_empty_masks_is_warned_about() {
        let root = Path::new("/data/RefSegRS");
        // One foreground pixel in the second sample: nothing to warn about.
        let some = split(vec![0., 0., 0., 0., 0., 0., 1., 0.]);
        assert_eq!(some.empty_masks(), 1);
        assert_eq!(some.empty_mask_warning("test", root), None);
        let none = split(vec![0.; 8]);
        assert_eq!(none.empty_masks(), 2);
        let w = none.empty_mask_warning("test", root).unwrap();
        assert!(
            w.starts_with("warning: all 2 masks of the test split of /data/RefSegRS are empty"),
            "{w}"
        );
        assert_eq!(split(vec![]).empty_mask_warning("test", root), None);
    }
}
