//! The data of latent-diffusion training: every image's VAE posterior (mean and standard
//! deviation) and every caption's CLIP states, encoded once by the frozen VAE and text encoder,
//! and the batches burn-train takes from them, with each sample's noise, timestep and caption
//! dropout drawn where the batch is built ([`super::draws`]).

use std::ops::Range;
use std::path::Path;

use anyhow::Context;
use burn::tensor::{DType, Int, Tensor, TensorData};
use diffris_data::ClipTokenizer;
use diffris_data::batch::epoch_order;
use diffris_data::formats::captions::CaptionedImage;
use diffris_data::transforms::image_to_input;
use diffris_kernels::SdBackend;
use diffris_model::precision::to_dtype;
use diffris_model::sd::StableDiffusion;
use diffris_model::sd::schedule::NoiseSchedule;
use indicatif::ProgressBar;

use super::draws::draw;
use crate::device::turnstile::Ticket;
use crate::training::loader::PassSource;

/// The seed of the validation set's draws: the same noise, timesteps for every run and seed, so
/// validation losses compare across runs.
pub const VALIDATION_SEED: u64 = 0x005E_ED0F_DA7A;

/// Encoded images and captions, one row each.
pub struct Encoded {
    /// `[C, h, w]` of one latent.
    pub latent_dims: [usize; 3],
    /// `[T, D]` of one caption's states.
    pub text_dims: [usize; 2],
    /// Rows of `C*h*w`: the posterior mean and standard deviation (unscaled).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Rows of `T*D`.
    pub text: Vec<f32>,
    /// The states of the empty caption, `T*D`.
    pub empty: Vec<f32>,
    /// Rows of `T` token ids: the captions as the text encoder reads them (a run that trains
    /// the text encoder encodes them again at every pass).
    pub ids: Vec<i64>,
    /// The empty caption's `T` token ids.
    pub empty_ids: Vec<i64>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        let per: usize = self.latent_dims.iter().product();
        self.mean.len() / per.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows of `rows`, in that order.
    pub fn select(&self, rows: &[usize]) -> Self {
        let per_latent: usize = self.latent_dims.iter().product();
        let per_text: usize = self.text_dims.iter().product();
        fn pick<T: Copy>(rows: &[usize], v: &[T], per: usize) -> Vec<T> {
            rows.iter()
                .flat_map(|&r| v[r * per..(r + 1) * per].iter().copied())
                .collect()
        }
        Self {
            latent_dims: self.latent_dims,
            text_dims: self.text_dims,
            mean: pick(rows, &self.mean, per_latent),
            std: pick(rows, &self.std, per_latent),
            text: pick(rows, &self.text, per_text),
            empty: self.empty.clone(),
            ids: pick(rows, &self.ids, self.text_dims[0]),
            empty_ids: self.empty_ids.clone(),
        }
    }

    /// The standard deviation of the posterior means over every element, and the mean of the
    /// posterior standard deviations: how much of a drawn latent is image and how much draw.
    pub fn spread(&self) -> (f64, f64) {
        let n = self.mean.len().max(1) as f64;
        let mu = self.mean.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = self
            .mean
            .iter()
            .map(|&v| (v as f64 - mu).powi(2))
            .sum::<f64>()
            / n;
        let sd = self.std.iter().map(|&v| v as f64).sum::<f64>() / n;
        (var.sqrt(), sd)
    }

    /// The same images with every caption replaced by the empty one.
    pub fn without_captions(&self) -> Self {
        Self {
            text: self.empty.repeat(self.len()),
            ids: self.empty_ids.repeat(self.len()),
            ..self.select(&(0..self.len()).collect::<Vec<_>>())
        }
    }

    /// Encodes `pairs` with the frozen VAE and text encoder of `sd`, `batch` at a time: each
    /// image centre-cropped to a square and resized to `size` (`image_to_input`), each caption
    /// tokenised to CLIP's 77 positions.
    pub fn encode<B: SdBackend>(
        pairs: &[CaptionedImage],
        sd: &StableDiffusion<B>,
        tokenizer: &ClipTokenizer,
        size: usize,
        batch: usize,
        device: &B::Device,
        bar: &ProgressBar,
    ) -> anyhow::Result<Self> {
        bar.set_length(pairs.len() as u64);
        let (mut mean, mut std, mut text, mut ids) = (vec![], vec![], vec![], vec![]);
        let mut dims = None;
        for chunk in pairs.chunks(batch.max(1)) {
            let mut pixels = Vec::with_capacity(chunk.len() * 3 * size * size);
            for p in chunk {
                pixels.extend(read_square(&p.image, size)?);
            }
            let image = Tensor::<B, 4>::from_data(
                TensorData::new(pixels, [chunk.len(), 3, size, size]),
                device,
            );
            let (m, logvar) = sd.vae.posterior(image);
            let [_, c, h, w] = m.dims();
            mean.extend(f32s(m.detach()));
            std.extend(f32s(logvar.mul_scalar(0.5).exp().detach()));
            let captions: Vec<&str> = chunk.iter().map(|p| p.text.as_str()).collect();
            let (states, chunk_ids) = encode_captions(sd, tokenizer, &captions, device)
                .with_context(|| {
                    format!("tokenising the captions of {}", chunk[0].image.display())
                })?;
            let [_, t, d] = states.dims();
            text.extend(f32s(states));
            ids.extend(chunk_ids);
            dims = Some(([c, h, w], [t, d]));
            bar.inc(chunk.len() as u64);
        }
        let (empty_states, empty_ids) = encode_captions(sd, tokenizer, &[""], device)?;
        let [_, t, d] = empty_states.dims();
        let (latent_dims, text_dims) = dims.unwrap_or(([0; 3], [t, d]));
        Ok(Self {
            latent_dims,
            text_dims,
            mean,
            std,
            text,
            empty: f32s(empty_states),
            ids,
            empty_ids,
        })
    }
}

/// The states of `captions`, `[N, 77, D]` in f32, and their token ids (`N * 77`).
pub(super) fn encode_captions<B: SdBackend>(
    sd: &StableDiffusion<B>,
    tokenizer: &ClipTokenizer,
    captions: &[&str],
    device: &B::Device,
) -> anyhow::Result<(Tensor<B, 3>, Vec<i64>)> {
    let mut ids = Vec::new();
    for c in captions {
        ids.extend(tokenizer.encode(c)?.ids.iter().map(|&i| i as i64));
    }
    let n = captions.len();
    let per = ids.len() / n.max(1);
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [n, per]), device);
    let states = to_dtype(sd.text_encoder.forward(tokens).detach(), DType::F32);
    Ok((states, ids))
}

fn f32s<B: SdBackend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    to_dtype(t, DType::F32).into_data().iter::<f32>().collect()
}

/// The network input of the image at `path`: its centred square crop resized to `size`.
pub(super) fn read_square(path: &Path, size: usize) -> anyhow::Result<Vec<f32>> {
    let img = image::open(path)
        .with_context(|| format!("reading {}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let square = image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side);
    Ok(image_to_input(&square.to_image(), size, size))
}

/// The rows at positions `epoch * segment_len ..` (`segment_len` of them) of a run's stream of
/// samples, which runs through `n` rows in data epochs, each a permutation drawn from `(seed,
/// data epoch)`.
pub fn stream_order(n: usize, seed: u64, segment_len: usize, epoch: usize) -> Vec<usize> {
    let start = epoch * segment_len;
    let mut cached: Option<(usize, Vec<usize>)> = None;
    (start..start + segment_len)
        .map(|p| {
            let (data_epoch, at) = (p / n, p % n);
            if cached.as_ref().is_none_or(|(e, _)| *e != data_epoch) {
                cached = Some((data_epoch, epoch_order(n, seed, data_epoch)));
            }
            cached.as_ref().expect("set above").1[at]
        })
        .collect()
}

/// How a [`DenoiseSet`] draws.
#[derive(Clone, Debug)]
pub struct DrawSpec {
    /// The run's seed (training: a stream of epochs, each a permutation); `None` for the
    /// validation set (its order, its draws from [`VALIDATION_SEED`], no caption dropout).
    pub seed: Option<u64>,
    /// Samples per loader epoch (a segment of `every` optimizer steps in training).
    pub segment_len: usize,
    pub caption_dropout: f64,
    /// The factor of the latents (the SD's `scaling_factor`).
    pub latent_scale: f64,
    /// Whether `x0` is a draw from the VAE's posterior (`mean + std e`, as diffusers' training
    /// scripts encode) or its mean.
    pub sample_posterior: bool,
    pub schedule: NoiseSchedule,
}

/// Encoded data with its draws: a [`PassSource`] of [`DenoiseBatch`]es.
pub struct DenoiseSet {
    pub data: Encoded,
    pub draws: DrawSpec,
}

/// One pass of latent-diffusion training.
#[derive(Clone, Debug)]
pub struct DenoiseBatch<B: SdBackend> {
    /// The noised latents `sqrt(a_t) x0 + sqrt(1 - a_t) noise`, `[B, C, h, w]`.
    pub noisy: Tensor<B, 4>,
    /// `[B]`, as floats (the UNet's timestep input).
    pub timesteps: Tensor<B, 1>,
    /// Caption states, the empty caption's where dropped, `[B, T, D]`.
    pub context: Tensor<B, 3>,
    /// The same captions' token ids, `[B, T]` (what a trained text encoder reads).
    pub ids: Tensor<B, 2, Int>,
    /// The noise to predict, `[B, C, h, w]`.
    pub noise: Tensor<B, 4>,
    /// This pass's share of its optimizer batch.
    pub loss_weight: f64,
    pub ticket: Option<Ticket>,
}

/// One sample's tensors as plain values.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleValues {
    pub noisy: Vec<f32>,
    pub timestep: usize,
    pub context: Vec<f32>,
    pub ids: Vec<i64>,
    pub noise: Vec<f32>,
}

impl DenoiseSet {
    /// The values of row `row` at stream position `position` (see [`super::draws`]).
    pub fn sample(&self, row: usize, position: u64) -> SampleValues {
        let d = &self.data;
        let per: usize = d.latent_dims.iter().product();
        let per_text: usize = d.text_dims.iter().product();
        let (seed, dropout) = match self.draws.seed {
            Some(seed) => (seed, self.draws.caption_dropout),
            None => (VALIDATION_SEED, 0.0),
        };
        let s = &self.draws.schedule;
        let r = draw(seed, position, per, s.steps(), dropout);
        let (signal, noise_scale) = s.coefficients(r.timestep);
        let scale = self.draws.latent_scale as f32;
        let (mean, std) = (
            &d.mean[row * per..(row + 1) * per],
            &d.std[row * per..(row + 1) * per],
        );
        // diffusers: latents = posterior.sample() * scaling_factor, then add_noise in f32. (The
        // posterior's values are drawn either way, so the stream's other draws do not move.)
        let spread = if self.draws.sample_posterior {
            1.0
        } else {
            0.0
        };
        let noisy = (0..per)
            .map(|i| {
                let x0 = (mean[i] + spread * std[i] * r.posterior[i]) * scale;
                x0 * signal + r.noise[i] * noise_scale
            })
            .collect();
        let t = d.text_dims[0];
        let (context, ids) = if r.drop_caption {
            (d.empty.clone(), d.empty_ids.clone())
        } else {
            (
                d.text[row * per_text..(row + 1) * per_text].to_vec(),
                d.ids[row * t..(row + 1) * t].to_vec(),
            )
        };
        SampleValues {
            noisy,
            timestep: r.timestep,
            context,
            ids,
            noise: r.noise,
        }
    }
}

impl<B: SdBackend> PassSource<B> for DenoiseSet {
    type Batch = DenoiseBatch<B>;

    fn epoch_len(&self) -> usize {
        match self.draws.seed {
            Some(_) => self.draws.segment_len,
            None => self.data.len(),
        }
    }

    /// Training: positions `epoch * segment_len ..` of the run's stream, which runs through
    /// the data in epochs, each a permutation drawn from `(seed, data epoch)`.
    fn order(&self, seed: Option<u64>, epoch: usize) -> Vec<usize> {
        let n = self.data.len();
        match (seed, self.draws.seed) {
            (Some(seed), Some(_)) => stream_order(n, seed, self.draws.segment_len, epoch),
            _ => (0..n).collect(),
        }
    }

    fn batch(
        &self,
        samples: &[usize],
        positions: Range<usize>,
        epoch: usize,
        device: &B::Device,
    ) -> DenoiseBatch<B> {
        let first = match self.draws.seed {
            Some(_) => (epoch * self.draws.segment_len + positions.start) as u64,
            None => positions.start as u64,
        };
        let values: Vec<SampleValues> = samples
            .iter()
            .enumerate()
            .map(|(k, &row)| self.sample(row, first + k as u64))
            .collect();
        let n = samples.len();
        let [c, h, w] = self.data.latent_dims;
        let [t, d] = self.data.text_dims;
        let cat = |f: &dyn Fn(&SampleValues) -> &[f32]| -> Vec<f32> {
            values.iter().flat_map(|v| f(v).iter().copied()).collect()
        };
        DenoiseBatch {
            noisy: Tensor::from_data(TensorData::new(cat(&|v| &v.noisy), [n, c, h, w]), device),
            timesteps: Tensor::from_data(
                TensorData::new(
                    values.iter().map(|v| v.timestep as f32).collect::<Vec<_>>(),
                    [n],
                ),
                device,
            ),
            context: Tensor::from_data(TensorData::new(cat(&|v| &v.context), [n, t, d]), device),
            ids: Tensor::from_data(
                TensorData::new(
                    values.iter().flat_map(|v| v.ids.iter().copied()).collect(),
                    [n, t],
                ),
                device,
            ),
            noise: Tensor::from_data(TensorData::new(cat(&|v| &v.noise), [n, c, h, w]), device),
            loss_weight: 1.0,
            ticket: None,
        }
    }

    fn mark(batch: &mut DenoiseBatch<B>, weight: f64, ticket: Option<Ticket>) {
        batch.loss_weight = weight;
        batch.ticket = ticket;
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn set(seed: Option<u64>, segment_len: usize, dropout: f64) -> DenoiseSet {
        // Three rows of 2 latent values and 2 text values each.
        DenoiseSet {
            data: Encoded {
                latent_dims: [2, 1, 1],
                text_dims: [1, 2],
                mean: vec![0.5, -1.0, 2.0, 0.0, 1.0, 1.0],
                std: vec![0.1, 0.2, 0.0, 1.0, 0.5, 0.5],
                text: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                empty: vec![-7.0, -8.0],
                ids: vec![11, 12, 13],
                empty_ids: vec![10],
            },
            draws: DrawSpec {
                seed,
                segment_len,
                caption_dropout: dropout,
                latent_scale: 2.0,
                sample_posterior: true,
                schedule: NoiseSchedule::sd(),
            },
        }
    }

    /// A sample by hand: `x0 = (mean + std e) * scale`, then diffusers' `add_noise` with the
    /// schedule's `alpha_bar_t`; a dropped caption is the empty caption's states.
    #[test]
    fn a_sample_is_the_noised_posterior_draw_of_its_row() {
        let s = set(Some(9), 4, 0.5);
        let schedule = NoiseSchedule::sd();
        let mut dropped = 0;
        for position in 0..40u64 {
            let row = (position % 3) as usize;
            let v = s.sample(row, position);
            let r = draw(9, position, 2, 1000, 0.5);
            let a = schedule.alphas_cumprod[r.timestep];
            for i in 0..2 {
                let (m, sd) = (s.data.mean[row * 2 + i], s.data.std[row * 2 + i]);
                let x0 = (m + sd * r.posterior[i]) * 2.0;
                let expected = x0 * a.sqrt() + r.noise[i] * (1.0 - a).sqrt();
                assert!((v.noisy[i] - expected).abs() <= 1e-6 * (1.0 + expected.abs()));
            }
            assert_eq!(v.noise, r.noise);
            assert_eq!(v.timestep, r.timestep);
            if r.drop_caption {
                dropped += 1;
                assert_eq!(v.context, [-7.0, -8.0]);
                assert_eq!(v.ids, [10], "the empty caption's ids with its states");
            } else {
                assert_eq!(v.context, s.data.text[row * 2..row * 2 + 2]);
                assert_eq!(v.ids, [11 + row as i64]);
            }
        }
        assert!(dropped > 0 && dropped < 40, "{dropped}");
        // The validation set: its own fixed draws, never a dropped caption.
        let val = set(None, 4, 0.5);
        for p in 0..40 {
            let v = val.sample(1, p);
            assert_eq!(v.context, [3.0, 4.0]);
            assert_eq!(v.timestep, draw(VALIDATION_SEED, p, 2, 1000, 0.0).timestep);
        }
        // From the posterior's mean: x0 = mean * scale, the same noise and timestep.
        let mut at_mean = set(Some(9), 4, 0.5);
        at_mean.draws.sample_posterior = false;
        let (v, r) = (at_mean.sample(2, 7), draw(9, 7, 2, 1000, 0.5));
        let a = schedule.alphas_cumprod[r.timestep];
        let expected = 1.0 * 2.0 * a.sqrt() + r.noise[0] * (1.0 - a).sqrt();
        assert!((v.noisy[0] - expected).abs() <= 1e-6 * (1.0 + expected.abs()));
    }

    /// The segments of training run through the data in epochs, each the permutation of
    /// `epoch_order`: segment after segment, the stream is those permutations end to end.
    #[test]
    fn segments_cut_one_stream_of_epoch_permutations() {
        let s = set(Some(5), 4, 0.0);
        let segments: Vec<usize> = (0..5)
            .flat_map(|k| <DenoiseSet as PassSource<Flex>>::order(&s, Some(5), k))
            .collect();
        let epochs: Vec<usize> = (0..7).flat_map(|e| epoch_order(3, 5, e)).collect();
        assert_eq!(segments, epochs[..20]);
        assert_eq!(<DenoiseSet as PassSource<Flex>>::epoch_len(&s), 4);
        let val = set(None, 4, 0.0);
        assert_eq!(
            <DenoiseSet as PassSource<Flex>>::order(&val, None, 3),
            [0, 1, 2]
        );
        // A batch's draws follow its positions: positions 4..6 of segment 1 are stream
        // positions 8 and 9.
        let b: DenoiseBatch<Flex> =
            PassSource::<Flex>::batch(&s, &[2, 0], 4..6, 1, &Default::default());
        let noise: Vec<f32> = b.noise.into_data().iter::<f32>().collect();
        let expected: Vec<f32> = [8u64, 9]
            .iter()
            .flat_map(|&p| draw(5, p, 2, 1000, 0.0).noise)
            .collect();
        assert_eq!(noise, expected);
    }
}
