//! The VAE's own stage (`pretrain --stage vae`): the encoder and decoder trained as a KL
//! autoencoder, as latent diffusion trains its first stage (LDM's `AutoencoderKL` with
//! `LPIPSWithDiscriminator`), without the two parts that need outside weights or a second
//! network: per image, the L1 reconstruction error of a decoded posterior draw summed over its
//! pixels, plus `kl_weight` times the posterior's KL divergence from the standard normal summed
//! over its latent (LDM: 1e-6); the perceptual (LPIPS) and adversarial terms are left out and
//! the learned output log-variance is held at 0 (its starting value). After training, the
//! latents' factor is measured as SD's was: one over the standard deviation of the latents the
//! encoder draws (here over the held-out images), and written into the export's config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{AutodiffModule, Module, ModuleMapper};
use burn::tensor::Tensor;
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use diffris_kernels::{SdAutodiffBackend, SdBackend};
use diffris_model::precision::tracked;
use diffris_model::sd::vae::VaeEncoder;
use diffris_model::sd::{StableDiffusion, VaeDecoder};

use super::images::{ImageBatch, ImageSet};
use super::segments::{Stage, run_stage};
use super::step::DenoiseOutput;
use super::{ExportRecord, PretrainOptions, PretrainSpec, export_stack};

/// The trained module of the VAE's stage.
#[derive(Module, Debug)]
pub struct Autoencoder<B: SdBackend> {
    pub encoder: VaeEncoder<B>,
    pub decoder: VaeDecoder<B>,
    /// The weight of the KL term.
    #[module(skip)]
    pub kl_weight: f64,
}

impl<B: SdAutodiffBackend> Autoencoder<B> {
    /// The trainable autoencoder of `encoder` and `decoder`: every parameter tracked.
    pub fn trainable(
        encoder: VaeEncoder<B::InnerBackend>,
        decoder: VaeDecoder<B::InnerBackend>,
        kl_weight: f64,
    ) -> Self {
        tracked(Self::from_inner(Autoencoder {
            encoder,
            decoder,
            kl_weight,
        }))
    }
}

impl<B: SdAutodiffBackend> crate::training::multi_device::PlannedModel<B> for Autoencoder<B> {
    type Kept = ();

    fn ticket(pass: &ImageBatch<B>) -> Option<crate::device::turnstile::Ticket> {
        pass.ticket.clone()
    }

    fn pass_index(output: &DenoiseOutput<B>) -> usize {
        output.pass
    }

    fn on_device(self, device: &B::Device, _kept: &std::cell::RefCell<Option<()>>) -> Self {
        self.fork(device)
    }
}

/// The pieces of the loss of one pass, each the mean over its images.
pub struct AutoencoderLoss<B: SdBackend> {
    /// L1 error summed over each image's pixels.
    pub reconstruction: Tensor<B, 1>,
    /// `0.5 * sum(mean^2 + var - 1 - logvar)` over each latent.
    pub kl: Tensor<B, 1>,
}

impl<B: SdBackend> Autoencoder<B> {
    /// The reconstruction and KL terms of `batch`.
    ///
    /// # Shapes
    /// see [`ImageBatch`] -> `[1]` each.
    pub fn terms(&self, batch: &ImageBatch<B>) -> AutoencoderLoss<B> {
        let (mean, logvar) = self.encoder.posterior(batch.images.clone());
        let n = mean.dims()[0] as f64;
        let std = logvar.clone().mul_scalar(0.5).exp();
        let z = mean.clone() + std * batch.draws.clone();
        let decoded = self.decoder.forward(z);
        let reconstruction = (decoded - batch.images.clone()).abs().sum().div_scalar(n);
        let kl = (mean.clone() * mean + logvar.clone().exp() - logvar)
            .sub_scalar(1.0)
            .sum()
            .mul_scalar(0.5 / n);
        AutoencoderLoss { reconstruction, kl }
    }

    /// The loss of `batch`: reconstruction + `kl_weight` * KL.
    ///
    /// # Shapes
    /// see [`ImageBatch`] -> `[1]`.
    pub fn loss(&self, batch: &ImageBatch<B>) -> Tensor<B, 1> {
        let t = self.terms(batch);
        t.reconstruction + t.kl.mul_scalar(self.kl_weight)
    }
}

impl<B: SdAutodiffBackend> TrainStep for Autoencoder<B> {
    type Input = ImageBatch<B>;
    type Output = DenoiseOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> TrainOutput<DenoiseOutput<B>> {
        // On one device, on the compute pool (`PoolOps`); on several, on the worker's thread.
        if batch.ticket.is_some() {
            return self.train_pass(batch);
        }
        B::sd_on_pool(|| self.train_pass(batch))
    }
}

impl<B: SdAutodiffBackend> Autoencoder<B> {
    fn train_pass(&self, batch: ImageBatch<B>) -> TrainOutput<DenoiseOutput<B>> {
        let weight = batch.loss_weight;
        let loss = self.loss(&batch);
        let output = DenoiseOutput {
            loss: loss.clone().detach(),
            weight,
            pass: super::step::pass_of(&batch.ticket),
        };
        // A micro-batch counts by its share of the batch (burn-train sums the passes).
        let loss = if weight == 1.0 {
            loss
        } else {
            loss.mul_scalar(weight)
        };
        TrainOutput::new(self, loss.backward(), output)
    }
}

impl<B: SdBackend> InferenceStep for Autoencoder<B> {
    type Input = ImageBatch<B>;
    type Output = DenoiseOutput<B>;

    fn step(&self, batch: ImageBatch<B>) -> DenoiseOutput<B> {
        B::sd_on_pool(|| DenoiseOutput {
            loss: self.loss(&batch),
            weight: batch.loss_weight,
            pass: super::step::pass_of(&batch.ticket),
        })
    }
}

/// The latents' factor of `encoder`: one over the standard deviation of its posterior draws
/// over `images`, from each image's posterior mean and variance (the variance of a draw is the
/// variance of the means plus the mean variance).
pub fn latent_scale<B: SdBackend>(
    encoder: &VaeEncoder<B>,
    images: &ImageSet,
    batch: usize,
    device: &B::Device,
) -> f64 {
    let (mut sum, mut squares, mut var, mut n) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    let rows: Vec<usize> = (0..images.len()).collect();
    for chunk in rows.chunks(batch.max(1)) {
        let b: ImageBatch<B> = crate::training::loader::PassSource::<B>::batch(
            images,
            chunk,
            0..chunk.len(),
            0,
            device,
        );
        let (mean, logvar) = encoder.posterior(b.images);
        for m in mean.into_data().iter::<f64>() {
            sum += m;
            squares += m * m;
            n += 1;
        }
        var += logvar.exp().into_data().iter::<f64>().sum::<f64>();
    }
    let n = n.max(1) as f64;
    let mu = sum / n;
    1.0 / (squares / n - mu * mu + var / n).sqrt()
}

/// Touches every parameter in module order: lazily initialised weights draw from the backend's
/// generator as they are read, so reading them at once, right after seeding, fixes their values.
struct Materialise;

impl<B: burn::tensor::backend::Backend> ModuleMapper<B> for Materialise {}

/// A fresh decoder of `encoder`'s architecture, drawn after seeding the backend with `seed`.
pub fn fresh_decoder<B: SdBackend>(
    encoder: &VaeEncoder<B>,
    seed: u64,
    device: &B::Device,
) -> VaeDecoder<B> {
    B::seed(device, seed);
    encoder
        .config()
        .init_decoder::<B>(device)
        .map(&mut Materialise)
}

/// Trains the VAE of `sd` (with `decoder`) on `train` (validating on `val`) in segments, writing
/// a checkpoint and an exported folder after each into `out`: the stack with the trained VAE,
/// decoder included, and its measured latent factor; returns the folders exported by this call.
#[allow(clippy::too_many_arguments)]
pub fn pretrain_vae<B: SdAutodiffBackend>(
    sd: &StableDiffusion<B::InnerBackend>,
    decoder: VaeDecoder<B::InnerBackend>,
    kl_weight: f64,
    train: Arc<ImageSet>,
    val: Arc<ImageSet>,
    spec: &PretrainSpec,
    out: &Path,
    devices: &[B::Device],
    opts: PretrainOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    let device = devices
        .first()
        .ok_or_else(|| anyhow::anyhow!("pre-training needs at least one device"))?;
    let stage = VaeStage {
        sd,
        decoder,
        kl_weight,
        val: val.clone(),
        eval_batch: opts.eval_batch,
        tokenizer: opts.tokenizer.clone(),
        device: device.clone(),
    };
    run_stage::<B, _>(&stage, train, val, spec, out, devices, opts)
}

struct VaeStage<'a, B: SdAutodiffBackend> {
    sd: &'a StableDiffusion<B::InnerBackend>,
    decoder: VaeDecoder<B::InnerBackend>,
    kl_weight: f64,
    val: Arc<ImageSet>,
    eval_batch: usize,
    tokenizer: Option<PathBuf>,
    device: B::Device,
}

impl<B: SdAutodiffBackend> Stage<B> for VaeStage<'_, B> {
    type Set = ImageSet;
    type Model = Autoencoder<B>;

    fn start(&self) -> Autoencoder<B::InnerBackend> {
        Autoencoder {
            encoder: self.sd.vae.clone(),
            decoder: self.decoder.clone(),
            kl_weight: self.kl_weight,
        }
    }

    fn first(&self) -> Autoencoder<B> {
        Autoencoder::trainable(self.sd.vae.clone(), self.decoder.clone(), self.kl_weight)
    }

    fn trainable(&self, weights: Autoencoder<B::InnerBackend>) -> Autoencoder<B> {
        Autoencoder::trainable(weights.encoder, weights.decoder, self.kl_weight)
    }

    fn side_loss(&self, _weights: &Autoencoder<B::InnerBackend>) -> Option<f64> {
        None
    }

    fn export(
        &self,
        weights: Autoencoder<B::InnerBackend>,
        out: &Path,
        record: &ExportRecord,
    ) -> anyhow::Result<PathBuf> {
        let scale = latent_scale(&weights.encoder, &self.val, self.eval_batch, &self.device);
        anyhow::ensure!(
            scale.is_finite() && scale > 0.0,
            "the latents of the VAE after {} steps have no finite spread (factor {scale})",
            record.steps
        );
        let stack = StableDiffusion {
            text_encoder: self.sd.text_encoder.clone(),
            vae: weights.encoder.with_scaling_factor(scale),
            unet: self.sd.unet.clone(),
        };
        let decoder = weights.decoder.with_scaling_factor(scale);
        export_stack(
            &stack,
            Some(&decoder),
            out,
            self.tokenizer.as_deref(),
            record,
        )
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;
    use burn::tensor::backend::Backend;

    /// The tiny profile's VAE on 8x8 images: latents of 32 x 2 x 2.
    fn parts() -> (VaeEncoder<Flex>, VaeDecoder<Flex>, ImageSet) {
        let device = Default::default();
        let vae = crate::config::profile::tiny_arch().vae;
        Flex::seed(&device, 3);
        // Read at once: clones of lazily initialised weights would each draw their own.
        let encoder = vae.init::<Flex>(&device).map(&mut Materialise);
        let decoder = fresh_decoder(&encoder, 4, &device);
        let pixels: Vec<f32> = (0..3 * 3 * 64)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let set = ImageSet {
            size: 8,
            pixels,
            latent_dims: [32, 2, 2],
            seed: Some(9),
            segment_len: 3,
        };
        (encoder, decoder, set)
    }

    fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f64> {
        t.into_data().iter::<f64>().collect()
    }

    /// The two terms recomputed by hand (f64) from the encoder's posterior and the decoder's
    /// image of the batch's own draws: per image the summed L1 error and
    /// 0.5 * sum(mean^2 + var - 1 - logvar), averaged over the images.
    #[test]
    fn the_loss_is_l1_plus_weighted_kl_per_image() {
        let (encoder, decoder, set) = parts();
        let device = Default::default();
        let batch: ImageBatch<Flex> =
            crate::training::loader::PassSource::<Flex>::batch(&set, &[0, 2], 0..2, 0, &device);
        let model = Autoencoder {
            encoder: encoder.clone(),
            decoder: decoder.clone(),
            kl_weight: 0.25,
        };
        let (mean, logvar) = encoder.posterior(batch.images.clone());
        let (m, lv, e) = (
            values(mean.clone()),
            values(logvar.clone()),
            values(batch.draws.clone()),
        );
        let z: Vec<f32> = (0..m.len())
            .map(|i| (m[i] + (lv[i] / 2.0).exp() * e[i]) as f32)
            .collect();
        let decoded = values(decoder.forward(Tensor::from_data(
            TensorData::new(z, [2, 32, 2, 2]),
            &device,
        )));
        let x = values(batch.images.clone());
        let l1 = decoded
            .iter()
            .zip(&x)
            .map(|(d, x)| (d - x).abs())
            .sum::<f64>()
            / 2.0;
        let kl = (0..m.len())
            .map(|i| 0.5 * (m[i] * m[i] + lv[i].exp() - 1.0 - lv[i]))
            .sum::<f64>()
            / 2.0;
        let terms = model.terms(&batch);
        let (got_l1, got_kl) = (values(terms.reconstruction)[0], values(terms.kl)[0]);
        // f32 sums of 384 and 256 terms against f64 ones: relative 1e-5.
        assert!((got_l1 - l1).abs() <= 1e-5 * l1, "{got_l1} vs {l1}");
        assert!((got_kl - kl).abs() <= 1e-5 * kl, "{got_kl} vs {kl}");
        let loss = values(model.loss(&batch))[0];
        let want = l1 + 0.25 * kl;
        assert!((loss - want).abs() <= 1e-5 * want, "{loss} vs {want}");
    }

    /// The latents' factor is one over the spread of actual posterior draws: measured here on
    /// 200 draws per latent element of the three images.
    #[test]
    fn the_latent_factor_is_one_over_the_spread_of_draws() {
        let (encoder, _, set) = parts();
        let device = Default::default();
        let scale = latent_scale(&encoder, &set, 2, &device);
        let all: ImageBatch<Flex> =
            crate::training::loader::PassSource::<Flex>::batch(&set, &[0, 1, 2], 0..3, 0, &device);
        let (mean, logvar) = encoder.posterior(all.images);
        let (m, lv) = (values(mean), values(logvar));
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        let mut draws = Vec::new();
        for _ in 0..200 {
            let e = crate::pretrain::draws::normals(&mut rng, m.len());
            draws.extend((0..m.len()).map(|i| m[i] + (lv[i] / 2.0).exp() * e[i] as f64));
        }
        let n = draws.len() as f64;
        let mu = draws.iter().sum::<f64>() / n;
        let sd = (draws.iter().map(|d| (d - mu).powi(2)).sum::<f64>() / n).sqrt();
        // 76,800 draws: the sample deviation is within about 0.5% of the true one.
        assert!(
            (scale * sd - 1.0).abs() < 0.01,
            "factor {scale}, draws' deviation {sd}"
        );
    }

    /// A fresh decoder depends on its seed alone.
    #[test]
    fn a_fresh_decoder_is_its_seeds() {
        let (encoder, decoder, _) = parts();
        let device = Default::default();
        let again = fresh_decoder(&encoder, 4, &device);
        let other = fresh_decoder(&encoder, 5, &device);
        let w = |d: &VaeDecoder<Flex>| values(d.decoder.conv_out.weight.val());
        assert_eq!(w(&decoder), w(&again));
        assert_ne!(w(&decoder), w(&other));
    }
}
