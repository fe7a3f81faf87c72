//! diffusers `attention_processor.py` / `attention.py` / `transformer_2d.py`: multi-head
//! attention, the GEGLU feed-forward, `BasicTransformerBlock` and the spatial transformer
//! (`Transformer2DModel`) of the SD-1.x UNet.

use crate::norm::{sd_group_norm, sd_layer_norm};
use crate::precision::{to_dtype, widen};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, backend::Backend};
use diffris_kernels::{
    SdBackend, sd_attention, sd_conv2d, sd_geglu, sd_linear, sd_transpose, swap_dims,
};

use super::resnet::conv1x1;

/// The epsilon of the transformer blocks' layer norms (diffusers' default).
const LAYER_NORM_EPS: f64 = 1e-5;

/// Splits `[B, N, H*D]` into heads `[B, H, N, D]`.
pub(crate) fn split_heads<B: SdBackend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [b, n, c] = x.dims();
    swap_dims(x.reshape([b, n, heads, c / heads]), 1, 2)
}

/// Merges heads `[B, H, N, D]` back into `[B, N, H*D]`.
pub(crate) fn merge_heads<B: SdBackend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, h, n, d] = x.dims();
    swap_dims(x, 1, 2).reshape([b, n, h * d])
}

/// Burn's attention kernel, run in f32 for half-precision inputs and cast back (CLIP's causal
/// attention and the VAE's mid-block attention; neither is trained through).
///
/// # Shapes
/// `q`: `[B, H, Nq, D]`, `k`, `v`: `[B, H, Nk, D]` -> `[B, H, Nq, D]`.
pub(crate) fn frozen_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    let out = attention(widen(q), widen(k), widen(v), None, None, options);
    to_dtype(out, dtype)
}

/// `softmax(Q K^T / sqrt(d)) V` per head, also returning the probabilities averaged over heads.
///
/// # Shapes
/// `q`: `[B, H, Nq, D]`, `k`, `v`: `[B, H, Nk, D]` -> (`[B, H, Nq, D]`, `[B, Nq, Nk]`).
pub(crate) fn attention_with_probs<B: SdBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [b, _, nq, d] = q.dims();
    let nk = k.dims()[2];
    let dtype = q.dtype();
    let scores = q
        .matmul(swap_dims(k, 2, 3))
        .mul_scalar((d as f64).powf(-0.5));
    // Half-precision scores get their softmax and head mean in f32, cast back.
    let probs = softmax(widen(scores), 3);
    let mean = probs.clone().mean_dim(1).reshape([b, nq, nk]);
    (to_dtype(probs, dtype).matmul(v), to_dtype(mean, dtype))
}

/// Multi-head attention with bias-free q/k/v projections and a biased output projection
/// (diffusers `Attention` as the SD UNet configures it).
#[derive(Module, Debug)]
pub struct CrossAttention<B: SdBackend> {
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    /// diffusers `to_out.0`.
    pub to_out: Linear<B>,
    heads: usize,
}

impl<B: SdBackend> CrossAttention<B> {
    /// `context_dim` is the query width for self-attention.
    pub fn new(query_dim: usize, context_dim: usize, heads: usize, device: &B::Device) -> Self {
        let proj = |d_in| {
            LinearConfig::new(d_in, query_dim)
                .with_bias(false)
                .init(device)
        };
        Self {
            to_q: proj(query_dim),
            to_k: proj(context_dim),
            to_v: proj(context_dim),
            to_out: LinearConfig::new(query_dim, query_dim).init(device),
            heads,
        }
    }

    /// Attends from `x` to `context` (to `x` itself when `None`); returns the head-averaged
    /// attention probabilities when `want_probs`.
    ///
    /// # Shapes
    /// `x`: `[B, N, C]`, `context`: `[B, M, C_ctx]` -> (`[B, N, C]`, `[B, N, M]`).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<Tensor<B, 3>>,
        want_probs: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        let context = context.unwrap_or_else(|| x.clone());
        let q = split_heads(sd_linear(&self.to_q, x), self.heads);
        let k = split_heads(sd_linear(&self.to_k, context.clone()), self.heads);
        let v = split_heads(sd_linear(&self.to_v, context), self.heads);
        let (out, probs) = if want_probs {
            let (out, probs) = attention_with_probs(q, k, v);
            (out, Some(probs))
        } else {
            (sd_attention(q, k, v), None)
        };
        (sd_linear(&self.to_out, merge_heads(out)), probs)
    }
}

/// GEGLU feed-forward: `Linear(d, 2*4d) -> a * gelu(gate) -> Linear(4d, d)`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// diffusers `net.0.proj`.
    pub proj: Linear<B>,
    /// diffusers `net.2`.
    pub out: Linear<B>,
}

impl<B: SdBackend> FeedForward<B> {
    pub fn new(dim: usize, device: &B::Device) -> Self {
        let inner = 4 * dim;
        Self {
            proj: LinearConfig::new(dim, 2 * inner).init(device),
            out: LinearConfig::new(inner, dim).init(device),
        }
    }

    /// # Shapes
    /// `[B, N, C]` -> `[B, N, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        sd_linear(&self.out, sd_geglu(sd_linear(&self.proj, x)))
    }
}

/// `BasicTransformerBlock`: self-attention, cross-attention to the text, GEGLU feed-forward,
/// each pre-LayerNorm with a residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: SdBackend> {
    pub norm1: LayerNorm<B>,
    pub attn1: CrossAttention<B>,
    pub norm2: LayerNorm<B>,
    pub attn2: CrossAttention<B>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
}

impl<B: SdBackend> BasicTransformerBlock<B> {
    pub fn new(dim: usize, context_dim: usize, heads: usize, device: &B::Device) -> Self {
        let ln = || {
            LayerNormConfig::new(dim)
                .with_epsilon(LAYER_NORM_EPS)
                .init(device)
        };
        Self {
            norm1: ln(),
            attn1: CrossAttention::new(dim, dim, heads, device),
            norm2: ln(),
            attn2: CrossAttention::new(dim, context_dim, heads, device),
            norm3: ln(),
            ff: FeedForward::new(dim, device),
        }
    }

    /// # Shapes
    /// `x`: `[B, N, C]`, `context`: `[B, M, C_ctx]` -> (`[B, N, C]`, cross-attention
    /// probabilities `[B, N, M]` when `want_probs`).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        want_probs: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        let (h, _) = self.attn1.forward(
            sd_layer_norm(&self.norm1, LAYER_NORM_EPS, x.clone()),
            None,
            false,
        );
        let x = x + h;
        let (h, probs) = self.attn2.forward(
            sd_layer_norm(&self.norm2, LAYER_NORM_EPS, x.clone()),
            Some(context),
            want_probs,
        );
        let x = x + h;
        let x = x.clone()
            + self
                .ff
                .forward(sd_layer_norm(&self.norm3, LAYER_NORM_EPS, x));
        (x, probs)
    }
}

/// Input/output projection of a spatial transformer: a 1x1 conv (SD-1.x) or a linear layer
/// applied after flattening (SD-2, `use_linear_projection`).
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    Conv(Conv2d<B>),
    Linear(Linear<B>),
}

/// `Transformer2DModel` with one `BasicTransformerBlock` per layer.
#[derive(Module, Debug)]
pub struct Transformer2D<B: SdBackend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Projection<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: Projection<B>,
}

impl<B: SdBackend> Transformer2D<B> {
    pub fn new(
        channels: usize,
        context_dim: usize,
        heads: usize,
        groups: usize,
        linear_projection: bool,
        device: &B::Device,
    ) -> Self {
        let proj = || {
            if linear_projection {
                Projection::Linear(LinearConfig::new(channels, channels).init(device))
            } else {
                Projection::Conv(conv1x1(channels, channels, device))
            }
        };
        Self {
            norm: GroupNormConfig::new(groups, channels)
                .with_epsilon(1e-6)
                .init(device),
            proj_in: proj(),
            transformer_blocks: vec![BasicTransformerBlock::new(
                channels,
                context_dim,
                heads,
                device,
            )],
            proj_out: proj(),
        }
    }

    /// # Shapes
    /// `x`: `[B, C, H, W]`, `context`: `[B, M, C_ctx]` -> (`[B, C, H, W]`, the last block's
    /// head-averaged cross-attention probabilities `[B, H*W, M]` when `want_probs`).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        context: Tensor<B, 3>,
        want_probs: bool,
    ) -> (Tensor<B, 4>, Option<Tensor<B, 3>>) {
        let [b, c, h, w] = x.dims();
        let normed = sd_group_norm(&self.norm, x.clone());
        // Tokens are materialised transposed (sd_transpose), not as swapped views: on flex,
        // every op that meets a view copies it on one thread.
        let to_tokens = |t: Tensor<B, 4>| sd_transpose(t.reshape([b, c, h * w]));
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(sd_conv2d(conv, normed)),
            Projection::Linear(lin) => sd_linear(lin, to_tokens(normed)),
        };
        let mut probs = None;
        for block in &self.transformer_blocks {
            let (t, p) = block.forward(tokens, context.clone(), want_probs);
            tokens = t;
            probs = p;
        }
        let to_map = |t: Tensor<B, 3>| sd_transpose(t).reshape([b, c, h, w]);
        let out = match &self.proj_out {
            Projection::Conv(conv) => sd_conv2d(conv, to_map(tokens)),
            Projection::Linear(lin) => to_map(sd_linear(lin, tokens)),
        };
        (out + x, probs)
    }
}
