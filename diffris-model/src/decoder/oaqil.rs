//! The object-aware query interaction layer (OAQIL, paper eq. 14-20): query tokens read the text
//! through cross-attention, then group the fused visual features through Gumbel-normalised
//! attention with a straight-through hard assignment.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Distribution, Int, Tensor};
use diffris_kernels::{SdBackend, permute, swap_dims};

use super::common::{padding_mask, resize_bilinear};
pub use super::oaqil_layout::{OaqilLayout, PositionalInit, Temperature, TextReading};

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

    /// [`Self::forward`] with dropout `p` after the activation and after the output while
    /// training (timm's `Mlp`, which CGFormer's grouping uses).
    ///
    /// # Shapes
    /// `[B, N, d]` -> `[B, N, d]`.
    pub fn forward_dropout(&self, x: Tensor<B, 3>, p: f64, training: bool) -> Tensor<B, 3> {
        let hidden = dropout(gelu(self.fc1.forward(x)), p, training);
        dropout(self.fc2.forward(hidden), p, training)
    }
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
    /// Gumbel noise at evaluation too (CGFormer's code samples it in every forward).
    pub gumbel_at_eval: bool,
    pub tau_init: f64,
    pub temperature: Temperature,
    /// Whether this stage reads the text at all ([`TextReading::ReferentLate`] skips stage 1).
    pub reads_text: bool,
    /// Whether this stage has its own grouping attention (off: it borrows the previous stage's).
    pub own_grouping: bool,
    pub layout: OaqilLayout,
}

/// The token-language cross-attention (1 head) and the MLP after it (eq. 14-15).
#[derive(Module, Debug)]
pub struct TextRead<B: SdBackend> {
    pub norm_query: LayerNorm<B>,
    pub norm_text: LayerNorm<B>,
    pub text_q: Linear<B>,
    pub text_k: Linear<B>,
    pub text_v: Linear<B>,
    pub text_out: Linear<B>,
    pub norm_text_mlp: LayerNorm<B>,
    pub text_mlp: Mlp<B>,
}

/// The Gumbel-normalised grouping of pixels into the tokens (eq. 16-20).
#[derive(Module, Debug)]
pub struct Grouping<B: SdBackend> {
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
}

/// One OAQIL: its text read, its positional embedding and its grouping attention.
#[derive(Module, Debug)]
pub struct Oaqil<B: SdBackend> {
    /// Absent at a stage that does not read the text ([`TextReading::ReferentLate`]).
    pub text: Option<TextRead<B>>,
    /// `[h * w, D]` at the nominal size.
    pub pos_embed: Param<Tensor<B, 2>>,
    /// Absent at a stage that borrows the previous stage's ([`OaqilLayout::shared_grouping`]).
    pub grouping: Option<Grouping<B>>,
    hard: bool,
    gumbel: bool,
    gumbel_at_eval: bool,
    /// Only the referent token reads the text.
    referent_only: bool,
    residual: bool,
    dropout: f64,
    pe_size: (usize, usize),
}

impl OaqilConfig {
    pub fn init<B: SdBackend>(&self, device: &B::Device) -> Oaqil<B> {
        let d = self.hidden;
        let ln = |n| LayerNormConfig::new(n).init(device);
        let lin = |i, o, bias| LinearConfig::new(i, o).with_bias(bias).init(device);
        let (h, w) = self.pe_size;
        // Built in the order of the fields before the split into parts, so that a seed gives
        // the weights it gave then.
        let text = self.reads_text.then(|| TextRead {
            norm_query: ln(d),
            norm_text: ln(self.text_dim),
            text_q: lin(d, d, false),
            text_k: lin(self.text_dim, d, false),
            text_v: lin(self.text_dim, d, false),
            text_out: lin(d, d, true),
            norm_text_mlp: ln(d),
            text_mlp: Mlp::new(d, device),
        });
        let pos_embed = Initializer::Normal {
            mean: 0.0,
            std: self.layout.pos_init.std(d),
        }
        .init([h * w, d], device);
        let grouping = self.own_grouping.then(|| Grouping {
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
        });
        Oaqil {
            text,
            pos_embed,
            grouping,
            hard: self.hard,
            gumbel: self.gumbel,
            gumbel_at_eval: self.gumbel_at_eval,
            referent_only: self.layout.text_reading == TextReading::ReferentLate,
            residual: self.layout.residual,
            dropout: self.layout.dropout,
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

/// Inverted dropout (kept values scaled by `1 / (1 - p)`) while training; the identity otherwise.
fn dropout<B: SdBackend, const D: usize>(x: Tensor<B, D>, p: f64, training: bool) -> Tensor<B, D> {
    if !training || p == 0.0 {
        return x;
    }
    let keep = x.random_like(Distribution::Bernoulli(1.0 - p));
    x * keep.div_scalar(1.0 - p)
}

impl<B: SdBackend> Grouping<B> {
    /// The temperature `tau`, `[1]`.
    pub fn temperature(&self) -> Tensor<B, 1> {
        let tau_p = self.tau.val();
        if self.clamped {
            tau_p.clamp_max(0.0).exp()
        } else {
            tau_p.exp()
        }
    }
}

impl<B: SdBackend> Oaqil<B> {
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

    /// Eq. 14-15: the tokens (all, or the referent only) read the words up to the first end
    /// token; then the MLP over every token.
    ///
    /// # Shapes
    /// `queries`: `[B, N, D]`, `text`: `[B, T, D_text]`, `eos_index`: `[B]` -> `[B, N, D]`.
    pub fn read_text(
        &self,
        read: &TextRead<B>,
        queries: Tensor<B, 3>,
        text: Tensor<B, 3>,
        eos_index: Tensor<B, 1, Int>,
        training: bool,
    ) -> Tensor<B, 3> {
        let [b, n, d] = queries.dims();
        let t = text.dims()[1];
        let referent_only = self.referent_only && n > 1;
        let readers = if referent_only {
            queries.clone().narrow(1, n - 1, 1)
        } else {
            queries.clone()
        };
        let m = readers.dims()[1];
        let q = read
            .text_q
            .forward(read.norm_query.forward(readers.clone()));
        let normed_text = read.norm_text.forward(text);
        let k = read.text_k.forward(normed_text.clone());
        let v = read.text_v.forward(normed_text);
        let scores = q
            .matmul(swap_dims(k, 1, 2))
            .mul_scalar((d as f64).powf(-0.5));
        let mask = padding_mask(eos_index, t)
            .reshape([b, 1, t])
            .expand([b, m, t]);
        let attn = dropout(
            softmax(scores.mask_fill(mask, -1e9), 2),
            self.dropout,
            training,
        );
        let read_out = readers
            + dropout(
                read.text_out.forward(attn.matmul(v)),
                self.dropout,
                training,
            );
        let queries = if referent_only {
            Tensor::cat(vec![queries.narrow(1, 0, n - 1), read_out], 1)
        } else {
            read_out
        };
        let mlp = read
            .text_mlp
            .forward(read.norm_text_mlp.forward(queries.clone()));
        if self.residual { queries + mlp } else { mlp }
    }

    /// One interaction: text into the tokens, then pixels into the tokens through `g`, this
    /// stage's grouping attention (its own, or the one it shares: [`super::Pcmrd`] resolves it).
    ///
    /// # Shapes
    /// `queries`: `[B, N, D]`, `pixels`: `[B, D, h, w]`, `text`: `[B, T, D_text]`,
    /// `eos_index`: `[B]` -> (`[B, N, D]`, the referent token's assignment `[B, 1, h, w]`,
    /// every token's soft assignment `[B, N, h, w]`, detached).
    pub fn forward(
        &self,
        g: &Grouping<B>,
        queries: Tensor<B, 3>,
        pixels: Tensor<B, 4>,
        text: Tensor<B, 3>,
        eos_index: Tensor<B, 1, Int>,
        training: bool,
    ) -> (Tensor<B, 3>, Tensor<B, 4>, Tensor<B, 4>) {
        let [b, n, d] = queries.dims();
        let queries = match &self.text {
            Some(read) => self.read_text(read, queries, text, eos_index, training),
            None => queries,
        };

        // Eq. 16-20: Gumbel-normalised grouping of the pixels into the tokens.
        let [_, _, h, w] = pixels.dims();
        let flat = swap_dims(pixels.reshape([b, d, h * w]), 1, 2);
        let x = g.norm_pixels.forward(flat + self.positional(h, w));
        let gq = l2_normalize(g.group_q.forward(g.norm_group.forward(queries.clone())));
        let gk = l2_normalize(g.group_k.forward(x.clone()));
        let u = g.group_v.forward(x);
        let similarity = gq.matmul(swap_dims(gk, 1, 2));
        let tau = g.temperature();
        let noise = ((training || self.gumbel_at_eval) && self.gumbel)
            .then(|| gumbel_noise([b, n, h * w], &similarity.device()));
        let (assigned, probs) = assignment_with_probs(similarity, tau, noise, self.hard);
        let weights = assigned.clone() / (assigned.clone().sum_dim(2) + 1.0);
        let update = dropout(
            g.assign_proj.forward(weights.matmul(u)),
            self.dropout,
            training,
        );
        let mlp = g.update_mlp.forward_dropout(
            g.norm_update.forward(update + queries.clone()),
            self.dropout,
            training,
        );
        let queries = if self.residual { queries + mlp } else { mlp };
        // Reshape before narrowing: see `pcmrd::MaskHead::forward` for the cubecl bug this avoids.
        let hit = assigned.reshape([b, n, h, w]).narrow(1, n - 1, 1);
        (queries, hit, probs.detach().reshape([b, n, h, w]))
    }
}
