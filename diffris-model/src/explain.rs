//! What a trained DiffRIS reads from its text: integrated-gradient attributions of the predicted
//! mask to the text states that condition the UNet and the decoder (Sundararajan et al., 2017).
//!
//! The attributed quantity is a weighted logit sum `F(c) = sum_p r_p * logit_p(c)` of the
//! model run on text states `c` (`r`: usually the predicted mask of the input). Integrated
//! gradients from a baseline `c0` give each context position `i` the score
//! `a_i = sum_d (c - c0)_{i,d} * mean_alpha dF/dc_{i,d}(c0 + alpha (c - c0))`; by the
//! fundamental theorem of calculus the scores add up to `F(c) - F(c0)` (completeness) for a
//! model differentiable along the path, up to the error of the quadrature (midpoint rule over
//! `steps` points here). PCMRD's hard assignment is piecewise constant with a straight-through
//! gradient, so for it the sum departs from `F(c) - F(c0)`; [`Attribution::completeness_gap`]
//! reports by how much.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::diffris::DiffRis;
use diffris_kernels::SdBackend;

/// Integrated-gradient scores of every context position.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    /// One score per context position (77 for SD-1.x).
    pub per_token: Vec<f64>,
    /// `F(c)` at the input states.
    pub value: f64,
    /// `F(c0)` at the baseline.
    pub baseline_value: f64,
    /// Points of the midpoint rule.
    pub steps: usize,
}

impl Attribution {
    /// The sum of the scores (completeness: `value - baseline_value`).
    pub fn total(&self) -> f64 {
        self.per_token.iter().sum()
    }

    /// `|total - (value - baseline_value)| / |value - baseline_value|` (0 when both are 0).
    pub fn completeness_gap(&self) -> f64 {
        let delta = self.value - self.baseline_value;
        let miss = (self.total() - delta).abs();
        if delta == 0.0 {
            if miss == 0.0 { 0.0 } else { f64::INFINITY }
        } else {
            miss / delta.abs()
        }
    }
}

/// `F(c) = sum_p region_p * logit_p(c)` per sample, from an inference pass (no noise, running
/// BatchNorm statistics) with the UNet conditioned on `context`; the decoder reads `context`
/// too, or `decoder_text` when given (CLIP's states, under `decoder_text: clip`).
///
/// # Shapes
/// `latent`: `[B, C, h, w]`, `context`, `decoder_text`: `[B, 77, D]`, `eos_index`: `[B]`,
/// `region`: `[B, 1, H, W]` -> `[B]`.
pub fn weighted_logits<B: SdBackend>(
    model: &DiffRis<B>,
    latent: Tensor<B, 4>,
    context: Tensor<B, 3>,
    decoder_text: Option<Tensor<B, 3>>,
    eos_index: Tensor<B, 1, Int>,
    region: Tensor<B, 4>,
) -> Tensor<B, 1> {
    let b = latent.dims()[0];
    let decoder_text = decoder_text.unwrap_or_else(|| context.clone());
    let (out, _) = model.forward_texts(latent, context, decoder_text, eos_index, false, false);
    (out.logits * region)
        .reshape([b as i32, -1])
        .sum_dim(1)
        .reshape([b])
}

/// Integrated gradients of [`weighted_logits`] with respect to the states the UNet reads, from
/// `baseline` to `context`, over `steps` midpoints `alpha = (k + 1/2) / steps`, evaluated
/// `chunk` at a time as one batch; the decoder reads the same states, or the fixed
/// `decoder_text` when given. Give a model whose parameters are `no_grad()` (only the states
/// are tracked, so no parameter gradient is computed).
///
/// # Shapes
/// `latent`: `[1, C, h, w]`, `context`, `baseline`, `decoder_text`: `[1, 77, D]`,
/// `eos_index`: `[1]`, `region`: `[1, 1, H, W]`.
// The arguments are one sample's inputs and the two knobs of the quadrature; a struct would
// only rename them.
#[allow(clippy::too_many_arguments)]
pub fn integrated_gradients<B: AutodiffBackend + SdBackend>(
    model: &DiffRis<B>,
    latent: Tensor<B, 4>,
    context: Tensor<B, 3>,
    baseline: Tensor<B, 3>,
    decoder_text: Option<Tensor<B, 3>>,
    eos_index: Tensor<B, 1, Int>,
    region: Tensor<B, 4>,
    steps: usize,
    chunk: usize,
) -> Attribution {
    assert!(steps > 0 && chunk > 0, "steps and chunk must be positive");
    let [one, t, _] = context.dims();
    assert_eq!(one, 1, "one sample at a time");
    let device = context.device();
    let value = scalar(weighted_logits(
        model,
        latent.clone(),
        context.clone(),
        decoder_text.clone(),
        eos_index.clone(),
        region.clone(),
    ));
    let baseline_value = scalar(weighted_logits(
        model,
        latent.clone(),
        baseline.clone(),
        decoder_text.clone(),
        eos_index.clone(),
        region.clone(),
    ));
    let delta = (context - baseline.clone()).detach();
    let mut gradient_sum: Option<Tensor<B::InnerBackend, 3>> = None;
    let alphas: Vec<f32> = (0..steps)
        .map(|k| ((k as f64 + 0.5) / steps as f64) as f32)
        .collect();
    for part in alphas.chunks(chunk) {
        let c = part.len();
        let alpha = Tensor::<B, 3>::from_data(TensorData::new(part.to_vec(), [c, 1, 1]), &device);
        let states = (baseline.clone().repeat_dim(0, c) + delta.clone().repeat_dim(0, c) * alpha)
            .detach()
            .require_grad();
        // Samples are independent in an inference pass, so the gradient of the batch's sum is
        // each point's own gradient.
        let total = weighted_logits(
            model,
            latent.clone().repeat_dim(0, c),
            states.clone(),
            decoder_text.clone().map(|t| t.repeat_dim(0, c)),
            eos_index.clone().repeat_dim(0, c),
            region.clone().repeat_dim(0, c),
        )
        .sum();
        let grads = total.backward();
        let g = states
            .grad(&grads)
            .expect("the text states are tracked")
            .sum_dim(0);
        gradient_sum = Some(match gradient_sum {
            Some(s) => s + g,
            None => g,
        });
    }
    let mean = gradient_sum
        .expect("at least one step")
        .div_scalar(steps as f64);
    let per_token: Vec<f64> = (delta.inner() * mean)
        .sum_dim(2)
        .reshape([t])
        .into_data()
        .convert::<f64>()
        .to_vec()
        .expect("f64 data");
    Attribution {
        per_token,
        value,
        baseline_value,
        steps,
    }
}

fn scalar<B: SdBackend>(x: Tensor<B, 1>) -> f64 {
    x.into_data()
        .convert::<f64>()
        .to_vec::<f64>()
        .expect("f64 data")[0]
}
