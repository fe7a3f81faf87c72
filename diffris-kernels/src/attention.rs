//! Attention in query blocks: a forward that also returns the softmax statistics of every query
//! row, and a backward that recomputes the probabilities from them one block at a time.
//!
//! For one head, with `S = q k^T * scale`, `P = softmax(S)` by rows and `O = P v`, and the
//! gradient `dO` of the output:
//!
//! - `dv = P^T dO`
//! - `dP = dO v^T`, and with `delta = rowsum(dO * O)` (= `rowsum(P * dP)`),
//!   `dS = P * (dP - delta)`
//! - `dq = dS k * scale`, `dk = dS^T q * scale`.
//!
//! Each query block needs its rows of `S` and `P` only, so the largest temporary is
//! `[B, H, rows, Nk]` for a block of `rows` query rows ([`block_rows`]); what the backward needs
//! from the forward is `q`, `k`, `v`, `O` and, per query row, the row maximum and the sum of
//! exponentials. The forward computes the probabilities with exactly the operations of Burn's
//! attention fallback (`burn-backend` `attention_fallback`: max, shift, exp, sum, divide), so
//! the output equals Burn's autodiff attention bit for bit when the backend's matmul of a row
//! block equals the same rows of the whole product; the backward recomputes `P` the same way.
//!
//! Half-precision inputs are computed in f32 (the statistics stay f32; the output and the
//! gradients are cast back to the inputs' dtype), as fused attention kernels accumulate.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::dtype::{to_dtype, widen};
use crate::layout::{LayoutOps, swap_dims};

/// Elements of one `[B, H, rows, Nk]` block temporary: 2^24 f32 values, 64 MiB.
const BLOCK_ELEMENTS: usize = 1 << 24;

/// Query rows per block so that one `[B, H, rows, Nk]` temporary holds at most
/// [`BLOCK_ELEMENTS`] values (at least one row).
///
/// E.g. SD-1.5's 64x64 level, batch 1, 8 heads, Nk = 4096: 512 rows, 8 blocks.
pub fn block_rows(batch: usize, heads: usize, nk: usize) -> usize {
    (BLOCK_ELEMENTS / (batch * heads * nk).max(1)).max(1)
}

/// The softmax statistics of the query rows of each block, as Burn's fallback clamps them: the
/// row maximum of the scaled scores (>= the dtype's lowest finite value) and the sum of
/// `exp(score - max)` (>= its smallest positive normal value). Kept per block, as the forward
/// made them, so the backward reads contiguous tensors (a narrowed view of one `[B, H, Nq, 1]`
/// tensor is strided, and a strided operand sends the CPU backend's broadcasting ops down a
/// scalar loop).
///
/// # Shapes
/// block `i`: (`max`, `sum`), each `[B, H, rows_i, 1]`.
#[derive(Debug, Clone)]
pub struct RowStats<B: Backend> {
    /// Query rows per block (the last block may have fewer).
    pub rows: usize,
    pub blocks: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
}

/// `softmax(q k^T * D^-0.5) v` computed `rows` query rows at a time, with the row statistics
/// the backward needs. The probabilities are computed as Burn's fallback does: scaled scores,
/// row max (clamped), `exp(scores - max)`, row sum (clamped), divide.
///
/// # Shapes
/// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]` -> (`[B, H, Nq, Dv]`,
/// [`RowStats`]).
pub fn forward<B: LayoutOps>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    rows: usize,
) -> (Tensor<B, 4>, RowStats<B>) {
    let rows = rows.max(1);
    let dtype = q.dtype();
    let (q, k, v) = (widen(q), widen(k), widen(v));
    let [_, _, nq, d] = q.dims();
    let scale = (d as f64).powf(-0.5);
    let k_t = swap_dims(k, 2, 3);
    let (mut outs, mut blocks) = (Vec::new(), Vec::new());
    for start in (0..nq).step_by(rows) {
        let len = rows.min(nq - start);
        let scores = q
            .clone()
            .narrow(2, start, len)
            .matmul(k_t.clone())
            .mul_scalar(scale);
        let info = scores
            .dtype()
            .finfo()
            .expect("attention runs on float tensors");
        let max = scores.clone().max_dim(3).clamp_min(info.min);
        let numerator = (scores - max.clone()).exp();
        let sum = numerator.clone().sum_dim(3).clamp_min(info.min_positive);
        outs.push((numerator / sum.clone()).matmul(v.clone()));
        blocks.push((max, sum));
    }
    (
        to_dtype(Tensor::cat(outs, 2), dtype),
        RowStats { rows, blocks },
    )
}

/// [`forward`] with [`block_rows`] query rows per block.
///
/// # Shapes
/// as [`forward`].
pub fn forward_blocked<B: LayoutOps>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> (Tensor<B, 4>, RowStats<B>) {
    let [b, h, _, _] = q.dims();
    let rows = block_rows(b, h, k.dims()[2]);
    forward(q, k, v, rows)
}

/// Which input gradients to compute.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub q: bool,
    pub k: bool,
    pub v: bool,
}

/// The gradients [`backward`] computed: `None` for an input not [`Wanted`].
#[derive(Debug, Clone)]
pub struct InputGrads<B: Backend> {
    pub q: Option<Tensor<B, 4>>,
    pub k: Option<Tensor<B, 4>>,
    pub v: Option<Tensor<B, 4>>,
}

/// Gradients of the inputs of [`forward`] given the gradient of its output; `None` for inputs
/// not [`Wanted`].
///
/// Per block, with `E = exp(S - max)` (so `P = E / sum` by rows) and `g = dO / sum`, the row
/// scaling moves onto the small operands: `dv += E^T g`, `dS = E * (g v^T - delta / sum)`
/// (which is `P * (dP - delta)`), `dq = dS k * scale`, `dk += dS^T q * scale`. That is five
/// matmuls and four passes over each `[B, H, rows, Nk]` block.
///
/// # Shapes
/// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]`, `out` and `grad_out`:
/// `[B, H, Nq, Dv]`, `stats` as [`forward`] returned them -> gradients shaped as `q`, `k`, `v`.
pub fn backward<B: LayoutOps>(
    [q, k, v]: [Tensor<B, 4>; 3],
    out: Tensor<B, 4>,
    stats: RowStats<B>,
    grad_out: Tensor<B, 4>,
    wanted: Wanted,
) -> InputGrads<B> {
    let dtype = q.dtype();
    let [q, k, v, out, grad_out] = [q, k, v, out, grad_out].map(widen);
    let [_, _, _, d] = q.dims();
    let scale = (d as f64).powf(-0.5);
    let need_ds = wanted.q || wanted.k;
    let k_t = swap_dims(k.clone(), 2, 3);
    let v_t = swap_dims(v, 2, 3);
    let mut dq_blocks = Vec::new();
    let mut dk: Option<Tensor<B, 4>> = None;
    let mut dv: Option<Tensor<B, 4>> = None;
    let add = |acc: Option<Tensor<B, 4>>, x: Tensor<B, 4>| {
        Some(match acc {
            Some(a) => a + x,
            None => x,
        })
    };
    let rows = stats.rows;
    for (i, (max, sum)) in stats.blocks.into_iter().enumerate() {
        let (start, len) = (i * rows, max.dims()[2]);
        let q_block = q.clone().narrow(2, start, len);
        let g_block = grad_out.clone().narrow(2, start, len);
        let scores = q_block.clone().matmul(k_t.clone()).mul_scalar(scale);
        let exps = (scores - max).exp();
        let g = g_block.clone() / sum.clone();
        if wanted.v {
            dv = add(dv, swap_dims(exps.clone(), 2, 3).matmul(g.clone()));
        }
        if need_ds {
            // delta = rowsum(dO * O) = rowsum(P * dP).
            let delta = (g_block * out.clone().narrow(2, start, len)).sum_dim(3) / sum;
            let d_scores = exps * (g.matmul(v_t.clone()) - delta);
            if wanted.q {
                dq_blocks.push(d_scores.clone().matmul(k.clone()));
            }
            if wanted.k {
                dk = add(dk, swap_dims(d_scores, 2, 3).matmul(q_block));
            }
        }
    }
    InputGrads {
        q: wanted
            .q
            .then(|| to_dtype(Tensor::cat(dq_blocks, 2).mul_scalar(scale), dtype)),
        k: dk.map(|dk| to_dtype(dk.mul_scalar(scale), dtype)),
        v: dv.map(|dv| to_dtype(dv, dtype)),
    }
}

/// The attention of the SD stack (its default needs the layout family's swaps).
pub trait AttentionOps: LayoutOps {
    /// `softmax(q k^T / sqrt(D)) v` per head, without mask or bias.
    ///
    /// The default (plain backends: evaluation, encoding, `explain`, `segment`) is
    /// [`sd_attention_forward`](Self::sd_attention_forward) without its statistics: query
    /// blocks whose `[B, H, rows, Nk]` scores hold at most 64 MiB, so inference memory per
    /// sample is bounded as training's is (Burn's fallback, which cubecl runs without autotune
    /// and tries while autotuning, materialises all `[B, H, Nq, Nk]` scores: 16 GiB at SD-1.5's
    /// 64x64 level for 32 samples), and inference gives the numbers of an untracked training
    /// forward. `Autodiff<B>` overrides it with the memory-efficient backward; flex with its CPU
    /// kernel ([`crate::flex`]); libtorch with its scaled-dot-product attention (flash or
    /// memory-efficient kernels on CUDA).
    ///
    /// # Shapes
    /// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]` -> `[B, H, Nq, Dv]`.
    fn sd_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let tensor = |t| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(t));
        let (out, _) = Self::sd_attention_forward(tensor(q), tensor(k), tensor(v));
        out.into_primitive().tensor()
    }

    /// The forward of the memory-efficient attention: the output and the softmax statistics of
    /// every query row, which [`sd_attention_backward`](Self::sd_attention_backward) takes.
    /// `Autodiff<B>` calls it on its inner backend. The default is the backend-generic blocked
    /// computation ([`forward_blocked`]); flex runs a parallel CPU kernel
    /// ([`crate::flex`]).
    ///
    /// # Shapes
    /// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]` -> (`[B, H, Nq, Dv]`,
    /// [`RowStats`]).
    fn sd_attention_forward(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
    ) -> (Tensor<Self, 4>, RowStats<Self>) {
        forward_blocked(q, k, v)
    }

    /// The gradients of the tracked inputs of
    /// [`sd_attention_forward`](Self::sd_attention_forward), recomputing the probabilities
    /// from its statistics. The default is [`backward`].
    ///
    /// # Shapes
    /// `q`, `k`, `v` as for the forward; `out` and `grad_out`: `[B, H, Nq, Dv]` -> gradients
    /// shaped as `q`, `k`, `v`.
    fn sd_attention_backward(
        inputs: [Tensor<Self, 4>; 3],
        out: Tensor<Self, 4>,
        stats: RowStats<Self>,
        grad_out: Tensor<Self, 4>,
        wanted: Wanted,
    ) -> InputGrads<Self> {
        backward(inputs, out, stats, grad_out, wanted)
    }
}

/// Multi-head attention through [`AttentionOps::sd_attention`].
///
/// # Shapes
/// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]` -> `[B, H, Nq, Dv]`.
pub fn sd_attention<B: AttentionOps>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let out = B::sd_attention(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
