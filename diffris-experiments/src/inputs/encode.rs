//! The frozen VAE and CLIP outputs of a split, computed once per (weights, split, size).
//! DiffRIS adds no noise and no augmentation, so the latents and text states of a sample never
//! change during training: caching them removes the frozen encoders from every training step.

use std::path::Path;

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{DType, TensorData};
use diffris_data::batch::{RisBatch, RisBatcher, prepare_all};
use diffris_data::{ClipTokenizer, Sample};
use diffris_kernels::SdBackend;
use diffris_model::diffris::{encode_latent, encode_text_native};
use diffris_model::sd::{ClipTextModel, StableDiffusion, VaeEncoder};
use indicatif::ProgressBar;
use safetensors::Dtype;

use crate::inputs::encoded_cache::{self, EncodedRows, Layout, Writer, mask_bytes};
use crate::inputs::split::EncodedSplit;

impl EncodedSplit {
    /// Decodes, tokenises and encodes every sample, in batches of `batch` on `device`, and
    /// writes the encodings under `key` to the cache file `out` as they come (the split is never
    /// held in memory whole), then opens it ([`encoded_cache::load`]). The batches after the
    /// first are split into `threads` contiguous parts encoded at once (each part on its own
    /// thread with its own handle on the frozen weights). A sample's numbers do not depend on
    /// the thread count: the batches are the same either way.
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
        out: &Path,
        key: &str,
    ) -> anyhow::Result<Self> {
        let n = samples.len();
        let indices: Vec<usize> = (0..n).collect();
        let chunks: Vec<&[usize]> = indices.chunks(batch.max(1)).collect();
        bar.set_length(n as u64);
        let job = Encoder {
            samples: &samples,
            tokenizer,
            image_size,
            latent_scale,
            device,
            bar,
        };
        // The first batch gives the file its row sizes and element types.
        let (writer, rest) = match chunks.split_first() {
            None => {
                let layout = Layout {
                    samples: 0,
                    image_size,
                    latent: (Dtype::F32, [0; 3]),
                    text: (Dtype::F32, [0; 2]),
                };
                (Writer::create(out, key, layout)?, &[][..])
            }
            Some((first, rest)) => {
                let (rows, latent, text) = job.batch(first, &sd.vae, &sd.text_encoder)?;
                let layout = Layout {
                    samples: n,
                    image_size,
                    latent,
                    text,
                };
                let writer = Writer::create(out, key, layout)?;
                writer.write(0, &rows)?;
                (writer, rest)
            }
        };
        let workers = threads.clamp(1, rest.len().max(1));
        let per_worker = rest.len().div_ceil(workers).max(1);
        if workers == 1 {
            job.run(rest, &sd.vae, &sd.text_encoder, &writer)?;
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = rest
                    .chunks(per_worker)
                    .map(|mine| {
                        let (vae, clip) = (sd.vae.clone(), sd.text_encoder.clone());
                        let (job, writer) = (&job, &writer);
                        scope.spawn(move || job.run(mine, &vae, &clip, writer))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("an encoding thread panicked"))
                    .collect::<anyhow::Result<Vec<()>>>()
            })?;
        }
        writer.finish()?;
        encoded_cache::load(out, key, samples, image_size)?
            .ok_or_else(|| anyhow::anyhow!("{} vanished after it was written", out.display()))
    }
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

/// An encoder output as the cache stores it: its element type and little-endian bytes.
fn stored(data: TensorData) -> anyhow::Result<(Dtype, Vec<u8>)> {
    Ok(match data.dtype {
        DType::F32 => (
            Dtype::F32,
            data.iter::<f32>().flat_map(f32::to_le_bytes).collect(),
        ),
        DType::F16 => (
            Dtype::F16,
            data.iter::<half::f16>()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        DType::BF16 => (
            Dtype::BF16,
            data.iter::<half::bf16>()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        other => anyhow::bail!("an encoder output of {other:?} (expected f32, f16 or bf16)"),
    })
}

impl<B: SdBackend> Encoder<'_, B> {
    /// Encodes one batch (sample indices): its rows, and the element type and per-sample dims
    /// of its latents and text states.
    #[allow(clippy::type_complexity)]
    fn batch(
        &self,
        chunk: &[usize],
        vae: &VaeEncoder<B>,
        clip: &ClipTextModel<B>,
    ) -> anyhow::Result<(EncodedRows, (Dtype, [usize; 3]), (Dtype, [usize; 2]))> {
        let (h, w) = self.image_size;
        let items = prepare_all(self.samples, chunk, self.tokenizer, (h, w), 1)?;
        let n = items.len();
        let eos: Vec<i64> = items.iter().map(|i| i.eos_index as i64).collect();
        let masks: Vec<f32> = items
            .iter()
            .flat_map(|i| i.mask.iter().flatten().copied())
            .collect();
        let batch: RisBatch<B> = RisBatcher.batch(items, self.device);
        let (image, ids) = (batch.image, batch.ids);
        let latent = encode_latent(vae, image, self.latent_scale);
        // At the text encoder's precision: half the bytes at f16/bf16, the same values.
        let text = encode_text_native(clip, ids);
        let [_, c, lh, lw] = latent.dims();
        let [_, t, d] = text.dims();
        let (latent_type, latents) = stored(latent.into_data())?;
        let (text_type, text) = stored(text.into_data())?;
        self.bar.inc(n as u64);
        Ok((
            EncodedRows {
                latents,
                text,
                eos,
                masks: mask_bytes(&masks)?,
            },
            (latent_type, [c, lh, lw]),
            (text_type, [t, d]),
        ))
    }

    /// Encodes the batches `chunks` (sample indices) in order, writing each to `writer`.
    fn run(
        &self,
        chunks: &[&[usize]],
        vae: &VaeEncoder<B>,
        clip: &ClipTextModel<B>,
        writer: &Writer,
    ) -> anyhow::Result<()> {
        let layout = *writer.layout();
        for chunk in chunks {
            let (rows, latent, text) = self.batch(chunk, vae, clip)?;
            anyhow::ensure!(
                (latent, text) == (layout.latent, layout.text),
                "the encoders gave {latent:?} / {text:?} for samples {}.., {:?} / {:?} for the \
                 first batch",
                chunk[0],
                layout.latent,
                layout.text
            );
            writer.write(chunk[0], &rows)?;
        }
        Ok(())
    }
}
