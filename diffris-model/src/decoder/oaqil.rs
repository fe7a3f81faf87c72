//! The object-aware query interaction layer (OAQIL, paper eq. 14-20): query tokens read the text
//! through cross-attention, then group the fused visual features through Gumbel-normalised
//! attention with a straight-through hard assignment.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Distribution, Int, Tensor};
use diffris_kernels::{SdBackend, permute, swap_dims};
use serde::{Deserialize, Serialize};

use super::common::{padding_mask, resize_bilinear};

/// `Linear(d -> 2d) -> GELU -> Linear(2d -> d)`.
#[derive(Module, Debug)]
pub struct Mlp<B: SdBackend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: SdBackend> Mlp<B> {
    pub fn new(d: usize, device: &B::Device) -> Self {
        Self {
            fc1: LinearConfig::new(d, 2 * d).init(device),
            fc2: LinearConfig::new(2 * d, d).init(device),
        }
    }

    /// # Shapes
    /// `[B, N, d]` -> `[B, N, d]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

/// The parametrisation of OAQIL's Gumbel-softmax temperature `tau` (paper Eqs. 17-20).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Temperature {
    /// `tau = exp(tau_p)` with `tau_p` learned from `ln(tau_init)`: every step's gradient
    /// reaches it, as the paper's "learnable coefficient" asks.
    #[default]
    Learned,
    /// CGFormer's code: `tau = exp(min(tau_p, 0))` with `tau_p` starting at `tau_init` (1 there).
    /// At `tau_p >= 0` the clamp passes no gradient, so tau stays 1 for the whole run (only
    /// weight decay moves `tau_p`, towards 0 and no further).
    ClampedCgformer,
}

/// Sizes and switches of one OAQIL.
#[derive(Clone, Debug)]
pub struct OaqilConfig {
    pub hidden: usize,
    pub text_dim: usize,
    /// Nominal feature size `(h, w)` the positional embedding is learnt at.
    pub pe_size: (usize, usize),
    /// Straight-through hard assignment (off: soft).
    pub hard: bool,
    /// Gumbel noise while training.
    pub gumbel: bool,
    pub tau_init: f64,
    pub temperature: Temperature,
}

/// One OAQIL.
#[derive(Module, Debug)]
pub struct Oaqil<B: SdBackend> {
    // Token-language cross-attention (1 head).
    pub norm_query: LayerNorm<B>,
    pub norm_text: LayerNorm<B>,
    pub text_q: Linear<B>,
    pub text_k: Linear<B>,
    pub text_v: Linear<B>,
    pub text_out: Linear<B>,
    pub norm_text_mlp: LayerNorm<B>,
    pub text_mlp: Mlp<B>,
    // Gumbel-normalised grouping.
    /// `[h * w, D]` at the nominal size.
    pub pos_embed: Param<Tensor<B, 2>>,
    pub norm_pixels: LayerNorm<B>,
    pub norm_group: LayerNorm<B>,
    pub group_q: Linear<B>,
    pub group_k: Linear<B>,
    pub group_v: Linear<B>,
    pub assign_proj: Linear<B>,
    pub norm_update: LayerNorm<B>,
    pub update_mlp: Mlp<B>,
    /// `tau_p`; the temperature is `exp(tau_p)`, or `exp(min(tau_p, 0))` under CGFormer's
    /// clamp ([`Temperature`]).
    pub tau: Param<Tensor<B, 1>>,
    /// CGFormer's clamp ([`Temperature::ClampedCgformer`]).
    clamped: bool,
    hard: bool,
    gumbel: bool,
    pe_size: (usize, usize),
}

impl OaqilConfig {
    pub fn init<B: SdBackend>(&self, device: &B::Device) -> Oaqil<B> {
        let d = self.hidden;
        let ln = |n| LayerNormConfig::new(n).init(device);
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let (h, w) = self.pe_size;
        Oaqil {
            norm_query: ln(d),
            norm_text: ln(self.text_dim),
            text_q: lin(d, d, false),
            text_k: lin(self.text_dim, d, false),
            text_v: lin(self.text_dim, d, false),
            text_out: lin(d, d, true),
            norm_text_mlp: ln(d),
            text_mlp: Mlp::new(d, device),
            pos_embed: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([h * w, d], device),
            norm_pixels: ln(d),
            norm_group: ln(d),
            group_q: lin(d, d, true),
            group_k: lin(d, d, true),
            group_v: lin(d, d, true),
            assign_proj: lin(d, d, true),
            norm_update: ln(d),
            update_mlp: Mlp::new(d, device),
            tau: Initializer::Constant {
                value: match self.temperature {
                    Temperature::Learned => self.tau_init.ln(),
                    Temperature::ClampedCgformer => self.tau_init,
                },
            }
            .init([1], device),
            clamped: self.temperature == Temperature::ClampedCgformer,
            hard: self.hard,
            gumbel: self.gumbel,
            pe_size: self.pe_size,
        }
    }
}

/// Token-to-pixel assignment from similarity scores: `Y = softmax((S + g) / tau)` over tokens,
/// and with `hard`, `H = onehot(argmax Y) - sg(Y) + Y` (one-hot forward, soft gradient).
///
/// # Shapes
/// `scores`: `[B, N, P]`, `noise`: `[B, N, P]` -> `[B, N, P]`.
pub fn assignment<B: SdBackend>(
    scores: Tensor<B, 3>,
    tau: Tensor<B, 1>,
    noise: Option<Tensor<B, 3>>,
    hard: bool,
) -> Tensor<B, 3> {
    assignment_with_probs(scores, tau, noise, hard).0
}

/// [`assignment`] and the soft probabilities `Y` it rounds (the same tensor when not `hard`).
///
/// # Shapes
/// `scores`: `[B, N, P]`, `noise`: `[B, N, P]` -> (`[B, N, P]`, `[B, N, P]`).
pub fn assignment_with_probs<B: SdBackend>(
    scores: Tensor<B, 3>,
    tau: Tensor<B, 1>,
    noise: Option<Tensor<B, 3>>,
    hard: bool,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [_, n, _] = scores.dims();
    let logits = match noise {
        Some(g) => scores + g,
        None => scores,
    };
    let soft = softmax(logits / tau.reshape([1, 1, 1]), 1);
    if !hard {
        return (soft.clone(), soft);
    }
    let device = soft.device();
    let winner = soft.clone().argmax(1);
    let tokens = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([1, n, 1]);
    let onehot = winner.equal(tokens).float();
    (onehot - soft.clone().detach() + soft.clone(), soft)
}

/// Standard Gumbel(0, 1) samples.
pub fn gumbel_noise<B: SdBackend>(shape: [usize; 3], device: &B::Device) -> Tensor<B, 3> {
    let u = Tensor::<B, 3>::random(shape, Distribution::Uniform(0.0, 1.0), device)
        .clamp(1e-9, 1.0 - 1e-7);
    u.log().neg().log().neg()
}

fn l2_normalize<B: SdBackend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let norm = x
        .clone()
        .powf_scalar(2.0)
        .sum_dim(2)
        .sqrt()
        .clamp_min(1e-12);
    x / norm
}

impl<B: SdBackend> Oaqil<B> {
    /// The temperature `tau`, `[1]`.
    pub fn temperature(&self) -> Tensor<B, 1> {
        let tau_p = self.tau.val();
        if self.clamped {
            tau_p.clamp_max(0.0).exp()
        } else {
            tau_p.exp()
        }
    }

    /// The positional embedding at feature size `(h, w)` (bilinearly resized from the nominal
    /// size when they differ).
    ///
    /// # Shapes
    /// -> `[1, h * w, D]`.
    pub fn positional(&self, h: usize, w: usize) -> Tensor<B, 3> {
        let pe = self.pos_embed.val();
        let d = pe.dims()[1];
        let (h0, w0) = self.pe_size;
        if (h, w) == (h0, w0) {
            return pe.reshape([1, h * w, d]);
        }
        let grid = permute(pe.reshape([1, h0, w0, d]), [0, 3, 1, 2]);
        permute(resize_bilinear(grid, [h, w]), [0, 2, 3, 1]).reshape([1, h * w, d])
    }

    /// One interaction: text into the tokens, then pixels into the tokens.
    ///
    /// # Shapes
    /// `queries`: `[B, N, D]`, `pixels`: `[B, D, h, w]`, `text`: `[B, T, D_text]`,
    /// `eos_index`: `[B]` -> (`[B, N, D]`, the referent token's assignment `[B, 1, h, w]`,
    /// every token's soft assignment `[B, N, h, w]`, detached).
    pub fn forward(
        &self,
        queries: Tensor<B, 3>,
        pixels: Tensor<B, 4>,
        text: Tensor<B, 3>,
        eos_index: Tensor<B, 1, Int>,
        training: bool,
    ) -> (Tensor<B, 3>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, n, d] = queries.dims();
        let t = text.dims()[1];
        // Eq. 14-15: cross-attention to the words up to the first end token.
        let q = self
            .text_q
            .forward(self.norm_query.forward(queries.clone()));
        let normed_text = self.norm_text.forward(text);
        let k = self.text_k.forward(normed_text.clone());
        let v = self.text_v.forward(normed_text);
        let scores = q
            .matmul(swap_dims(k, 1, 2))
            .mul_scalar((d as f64).powf(-0.5));
        let mask = padding_mask(eos_index, t)
            .reshape([b, 1, t])
            .expand([b, n, t]);
        let attn = softmax(scores.mask_fill(mask, -1e9), 2);
        let queries = queries + self.text_out.forward(attn.matmul(v));
        let queries = queries.clone() + self.text_mlp.forward(self.norm_text_mlp.forward(queries));

        // Eq. 16-20: Gumbel-normalised grouping of the pixels into the tokens.
        let [_, _, h, w] = pixels.dims();
        let flat = swap_dims(pixels.reshape([b, d, h * w]), 1, 2);
        let x = self.norm_pixels.forward(flat + self.positional(h, w));
        let gq = l2_normalize(
            self.group_q
                .forward(self.norm_group.forward(queries.clone())),
        );
        let gk = l2_normalize(self.group_k.forward(x.clone()));
        let u = self.group_v.forward(x);
        let similarity = gq.matmul(swap_dims(gk, 1, 2));
        let tau = self.temperature();
        let noise =
            (training && self.gumbel).then(|| gumbel_noise([b, n, h * w], &similarity.device()));
        let (assigned, probs) = assignment_with_probs(similarity, tau, noise, self.hard);
        let weights = assigned.clone() / (assigned.clone().sum_dim(2) + 1.0);
        let update = self.assign_proj.forward(weights.matmul(u));
        let queries = queries.clone()
            + self
                .update_mlp
                .forward(self.norm_update.forward(update + queries));
        // Reshape before narrowing: see `pcmrd::MaskHead::forward` for the cubecl bug this avoids.
        let hit = assigned.reshape([b, n, h, w]).narrow(1, n - 1, 1);
        (queries, hit, probs.detach().reshape([b, n, h, w]))
    }
}
