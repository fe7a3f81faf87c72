//! The train and inference steps of latent-diffusion training: the UNet predicts the noise of a
//! noised latent given its caption, and the loss is the mean squared error of that prediction
//! (epsilon prediction, as SD-1.x trains).

use burn::module::{AutodiffModule, Module};
use burn::tensor::Tensor;
use burn::train::metric::{Adaptor, ItemLazy};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use diffris_kernels::{SdAutodiffBackend, SdBackend};
use diffris_model::precision::tracked;
use diffris_model::sd::{ClipTextModel, UNet2DConditionModel, UNetRequest};

use super::data::DenoiseBatch;

/// The trained module of `pretrain`: the UNet, and the text encoder when it trains too
/// (`None`: the captions' states were encoded once, frozen).
#[derive(Module, Debug)]
pub struct Denoiser<B: SdBackend> {
    pub unet: UNet2DConditionModel<B>,
    pub text_encoder: Option<ClipTextModel<B>>,
}

impl<B: SdAutodiffBackend> Denoiser<B> {
    /// The trainable denoiser of `unet` (and `text_encoder`): every parameter tracked. (Weights
    /// read from a file are plain tensors of the inner backend, which
    /// [`AutodiffModule::from_inner`] keeps untracked.)
    pub fn trainable(
        unet: UNet2DConditionModel<B::InnerBackend>,
        text_encoder: Option<ClipTextModel<B::InnerBackend>>,
    ) -> Self {
        tracked(Self::from_inner(Denoiser { unet, text_encoder }))
    }
}

/// The loss of one pass and its share of its optimizer batch (the output of both pre-training
/// stages' steps).
pub struct DenoiseOutput<B: SdBackend> {
    pub loss: Tensor<B, 1>,
    pub weight: f64,
    /// The pass's index in its epoch's plan (0 where the plan is not shared over devices).
    pub pass: usize,
}

/// The plan index of a pass with `ticket`.
pub fn pass_of(ticket: &Option<crate::device::turnstile::Ticket>) -> usize {
    ticket.as_ref().map_or(0, |t| t.pass)
}

impl<B: SdAutodiffBackend> crate::training::multi_device::PlannedModel<B> for Denoiser<B> {
    type Kept = ();

    fn ticket(pass: &DenoiseBatch<B>) -> Option<crate::device::turnstile::Ticket> {
        pass.ticket.clone()
    }

    fn pass_index(output: &DenoiseOutput<B>) -> usize {
        output.pass
    }

    fn on_device(self, device: &B::Device, _kept: &std::cell::RefCell<Option<()>>) -> Self {
        self.fork(device)
    }
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
        let context = match &self.text_encoder {
            Some(clip) => clip.forward(batch.ids.clone()),
            None => batch.context.clone(),
        };
        let out = self.unet.forward(
            batch.noisy.clone(),
            batch.timesteps.clone(),
            context,
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
        // On one device, on the compute pool (`PoolOps`); on several (passes with tickets),
        // on the worker's own thread, as the DiffRIS step does.
        if batch.ticket.is_some() {
            return self.train_pass(batch);
        }
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
            pass: pass_of(&batch.ticket),
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
            pass: pass_of(&batch.ticket),
        })
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Int, TensorData};
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
            ids: Tensor::zeros([2, 77], &device),
            noise: noise.clone(),
            loss_weight: 1.0,
            ticket: None,
        };
        let model = Denoiser {
            unet,
            text_encoder: None,
        };
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

    /// A trained text encoder reads the batch's token ids in place of the encoded states: the
    /// loss is the one computed from its own states, and its weights get gradients.
    #[test]
    fn a_trained_text_encoder_reads_the_ids_and_learns() {
        use burn::backend::Autodiff;
        use burn::optim::GradientsParams;
        type AB = Autodiff<Flex>;
        let device = Default::default();
        let sd = SdConfig::tiny();
        // Lazily initialised weights draw when first read, and each clone on its own: fixed
        // through their records first.
        let unet = sd.unet.init::<Flex>(&device);
        let unet = unet.clone().load_record(unet.into_record());
        let clip = sd.clip.init::<Flex>(&device);
        let clip = clip.clone().load_record(clip.into_record());
        let ids: Vec<i64> = (0..2 * 77)
            .map(|i| [49406, 320, 1929, 49407][i % 4])
            .collect();
        let ids = Tensor::<Flex, 2, Int>::from_data(TensorData::new(ids, [2, 77]), &device);
        let normal = Distribution::Normal(0.0, 1.0);
        let batch = DenoiseBatch::<Flex> {
            noisy: Tensor::random([2, 4, 8, 8], normal, &device),
            timesteps: Tensor::from_data(TensorData::new(vec![10.0f32, 900.0], [2]), &device),
            // Stale states, which a trained text encoder must not read.
            context: Tensor::zeros([2, 77, 32], &device),
            ids: ids.clone(),
            noise: Tensor::random([2, 4, 8, 8], normal, &device),
            loss_weight: 1.0,
            ticket: None,
        };
        let states = clip.forward(ids);
        let frozen = Denoiser {
            unet: unet.clone(),
            text_encoder: None,
        };
        let with_states = DenoiseBatch {
            context: states,
            ..batch.clone()
        };
        let expected: f32 = frozen.loss(&with_states).into_scalar();
        let trained = Denoiser::<AB>::trainable(unet, Some(clip));
        let to_ab = |b: &DenoiseBatch<Flex>| DenoiseBatch::<AB> {
            noisy: Tensor::from_inner(b.noisy.clone()),
            timesteps: Tensor::from_inner(b.timesteps.clone()),
            context: Tensor::from_inner(b.context.clone()),
            ids: Tensor::from_inner(b.ids.clone()),
            noise: Tensor::from_inner(b.noise.clone()),
            loss_weight: 1.0,
            ticket: None,
        };
        let loss = trained.loss(&to_ab(&batch));
        // Trained weights take Burn's composed operations where frozen ones take diffris's
        // kernels: the same arithmetic up to f32 rounding (equal bits here on flex).
        let got: f32 = loss.clone().into_scalar();
        assert!(
            (got - expected).abs() <= 1e-6 * expected,
            "{got} vs {expected}"
        );
        let grads = GradientsParams::from_grads(loss.backward(), &trained);
        let clip = trained.text_encoder.as_ref().unwrap();
        let embedding = clip.embeddings.token_embedding.weight.id;
        let g = grads
            .get::<Flex, 2>(embedding)
            .expect("the token embeddings get a gradient");
        assert!(g.abs().sum().into_scalar() > 0.0);
    }
}
