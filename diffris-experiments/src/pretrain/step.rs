//! The train and inference steps of latent-diffusion training: the UNet predicts the noise of a
//! noised latent given its caption, and the loss is the mean squared error of that prediction
//! (epsilon prediction, as SD-1.x trains).

use burn::module::{AutodiffModule, Module};
use burn::tensor::Tensor;
use burn::train::metric::{Adaptor, ItemLazy};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use diffris_kernels::{SdAutodiffBackend, SdBackend};
use diffris_model::precision::tracked;
use diffris_model::sd::{UNet2DConditionModel, UNetRequest};

use super::data::DenoiseBatch;

/// The trained module of `pretrain`: the UNet.
#[derive(Module, Debug)]
pub struct Denoiser<B: SdBackend> {
    pub unet: UNet2DConditionModel<B>,
}

impl<B: SdAutodiffBackend> Denoiser<B> {
    /// The trainable denoiser of `unet`: every parameter tracked. (Weights read from a file are
    /// plain tensors of the inner backend, which [`AutodiffModule::from_inner`] keeps untracked.)
    pub fn trainable(unet: UNet2DConditionModel<B::InnerBackend>) -> Self {
        tracked(Self::from_inner(Denoiser { unet }))
    }
}

/// The loss of one pass and its share of its optimizer batch.
pub struct DenoiseOutput<B: SdBackend> {
    pub loss: Tensor<B, 1>,
    pub weight: f64,
}

/// [`DenoiseOutput`] as plain numbers, for the metrics thread.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DenoiseStats {
    pub loss: f64,
    pub weight: f64,
}

impl<B: SdBackend> ItemLazy for DenoiseOutput<B> {
    type ItemSync = DenoiseStats;

    fn sync(self) -> DenoiseStats {
        DenoiseStats {
            loss: self
                .loss
                .into_data()
                .iter::<f64>()
                .next()
                .unwrap_or(f64::NAN),
            weight: self.weight,
        }
    }
}

impl Adaptor<DenoiseStats> for DenoiseStats {
    fn adapt(&self) -> DenoiseStats {
        *self
    }
}

impl<B: SdBackend> Denoiser<B> {
    /// The mean squared error of the predicted noise over every element of the batch.
    ///
    /// # Shapes
    /// see [`DenoiseBatch`] -> `[1]`.
    pub fn loss(&self, batch: &DenoiseBatch<B>) -> Tensor<B, 1> {
        let out = self.unet.forward(
            batch.noisy.clone(),
            batch.timesteps.clone(),
            batch.context.clone(),
            UNetRequest {
                sample: true,
                ..Default::default()
            },
        );
        let pred = out.sample.expect("the noise prediction was requested");
        let diff = pred - batch.noise.clone();
        (diff.clone() * diff).mean()
    }
}

impl<B: SdAutodiffBackend> TrainStep for Denoiser<B> {
    type Input = DenoiseBatch<B>;
    type Output = DenoiseOutput<B>;

    fn step(&self, batch: DenoiseBatch<B>) -> TrainOutput<DenoiseOutput<B>> {
        // Pre-training runs on one device and waits on no other thread: on the compute pool
        // (`PoolOps`).
        B::sd_on_pool(|| self.train_pass(batch))
    }
}

impl<B: SdAutodiffBackend> Denoiser<B> {
    fn train_pass(&self, batch: DenoiseBatch<B>) -> TrainOutput<DenoiseOutput<B>> {
        let weight = batch.loss_weight;
        let loss = self.loss(&batch);
        let output = DenoiseOutput {
            loss: loss.clone().detach(),
            weight,
        };
        // A micro-batch's gradients are summed with its batch's other passes (burn-train's
        // accumulation), so its loss counts by its share of the batch.
        let loss = if weight == 1.0 {
            loss
        } else {
            loss.mul_scalar(weight)
        };
        TrainOutput::new(self, loss.backward(), output)
    }
}

impl<B: SdBackend> InferenceStep for Denoiser<B> {
    type Input = DenoiseBatch<B>;
    type Output = DenoiseOutput<B>;

    fn step(&self, batch: DenoiseBatch<B>) -> DenoiseOutput<B> {
        B::sd_on_pool(|| DenoiseOutput {
            loss: self.loss(&batch),
            weight: batch.loss_weight,
        })
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, TensorData};
    use diffris_model::sd::SdConfig;

    /// The loss is the mean over every element of `(unet(noisy, t, context) - noise)^2`, here
    /// summed by hand in f64 from the UNet's own prediction.
    #[test]
    fn the_loss_is_the_mean_squared_error_of_the_predicted_noise() {
        let device = Default::default();
        let unet = SdConfig::tiny().unet.init::<Flex>(&device);
        let noisy =
            Tensor::<Flex, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let noise =
            Tensor::<Flex, 4>::random([2, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let context =
            Tensor::<Flex, 3>::random([2, 77, 32], Distribution::Normal(0.0, 1.0), &device);
        let timesteps =
            Tensor::<Flex, 1>::from_data(TensorData::new(vec![10.0f32, 900.0], [2]), &device);
        let batch = DenoiseBatch {
            noisy: noisy.clone(),
            timesteps: timesteps.clone(),
            context: context.clone(),
            noise: noise.clone(),
            loss_weight: 1.0,
            ticket: None,
        };
        let model = Denoiser { unet };
        let loss: f64 = model.loss(&batch).into_scalar() as f64;
        let pred = model
            .unet
            .forward(
                noisy,
                timesteps,
                context,
                UNetRequest {
                    sample: true,
                    ..Default::default()
                },
            )
            .sample
            .unwrap();
        let (p, n): (Vec<f32>, Vec<f32>) = (
            pred.into_data().to_vec().unwrap(),
            noise.into_data().to_vec().unwrap(),
        );
        let by_hand = p
            .iter()
            .zip(&n)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>()
            / p.len() as f64;
        // f32 accumulation of 512 squares against f64: well within 1e-5 relative.
        assert!(
            (loss - by_hand).abs() <= 1e-5 * by_hand,
            "{loss} vs {by_hand}"
        );
        assert!(by_hand > 0.1, "a random UNet does not predict the noise");
    }
}
