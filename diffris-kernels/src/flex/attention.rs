//! The memory-efficient attention as one CPU kernel over f32 slices: rayon tasks over
//! (head, query block), `gemm` products inside each task, the softmax rows in SIMD code.
//!
//! The arithmetic is that of [`crate::attention`] (the backend-generic version built from
//! Burn's tensor ops), per head of `[BH, N, D]` row-major data:
//!
//! - forward: `S = q k^T * scale`, row max `m` (clamped to f32's lowest finite value),
//!   `E = exp(S - m)`, row sum `s` (clamped to the smallest normal value), `O = (E / s) v`;
//! - backward, with `g = dO / s` and `delta = rowsum(dO * O) / s`: `dv = E^T g`,
//!   `dS = E * (g v^T - delta)`, `dq = dS k * scale`, `dk = dS^T q * scale`.
//!
//! What the composition of tensor ops cannot do on the CPU backend: run the (head, block) pairs
//! in parallel (Burn's flex runs its attention one head after another on one thread), fuse the
//! elementwise passes into the rows while they are in cache, and skip the concatenations and
//! strided copies of the blocks.
//!
//! Deterministic for a given shape, whatever the number of threads: each output element is
//! computed by one task in a fixed order, and the `dk`/`dv` contributions of the query chunks of
//! a head are summed in chunk order.

use rayon::prelude::*;
use std::cell::RefCell;

use crate::attention::Wanted;

use super::matmul::matmul;
use super::rows::{divide, exp_shift, exp_shift_sum, max as row_max, mul_shifted};

/// Query rows per task step: a `[ROWS, Nk]` score block (2 MiB at Nk = 4096) stays in cache
/// between the product and the softmax passes.
const ROWS: usize = 128;
/// Query rows per backward task: each task accumulates its own `dk`/`dv` for its chunk, summed
/// afterwards in chunk order (at Nq = 4096, 4 chunks per head).
const CHUNK_ROWS: usize = 1024;

/// Shapes of one call: `q`: `[bh, nq, d]`, `k`: `[bh, nk, d]`, `v`: `[bh, nk, dv]`, all
/// contiguous row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub bh: usize,
    pub nq: usize,
    pub nk: usize,
    pub d: usize,
    pub dv: usize,
}

impl Dims {
    fn scale(&self) -> f32 {
        (self.d as f64).powf(-0.5) as f32
    }
}

/// What [`forward`] returns: the output `[bh, nq, dv]` and per query row the clamped maximum of
/// the scaled scores and the clamped sum of exponentials, each `[bh, nq]`.
#[derive(Debug, Clone)]
pub struct Forward {
    pub out: Vec<f32>,
    pub max: Vec<f32>,
    pub sum: Vec<f32>,
}

/// The gradients [`backward`] computed (`None` where not wanted), shaped as `q`, `k`, `v`.
#[derive(Debug, Clone, Default)]
pub struct Backward {
    pub q: Option<Vec<f32>>,
    pub k: Option<Vec<f32>>,
    pub v: Option<Vec<f32>>,
}

thread_local! {
    /// Per-thread scratch: the score block and, in the backward, the `g v^T` block.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Row-major strides of a `[rows, cols]` matrix and of its transpose as a `[cols, rows]` view.
fn rm(cols: usize) -> [isize; 2] {
    [cols as isize, 1]
}
fn transposed(cols: usize) -> [isize; 2] {
    [1, cols as isize]
}

/// `scores = q_block k^T * scale` for `rows` query rows into `buf[..rows * nk]`.
fn scores(buf: &mut [f32], q_rows: &[f32], k: &[f32], rows: usize, dims: &Dims) {
    let Dims { nk, d, .. } = *dims;
    matmul(
        [rows, nk, d],
        &mut buf[..rows * nk],
        rm(nk),
        false,
        q_rows,
        rm(d),
        k,
        transposed(d),
        dims.scale(),
        false,
    );
}

fn with_scratch<R>(len_a: usize, len_b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        let (a, b) = &mut *guard;
        if a.len() < len_a {
            a.resize(len_a, 0.0);
        }
        if b.len() < len_b {
            b.resize(len_b, 0.0);
        }
        f(&mut a[..len_a], &mut b[..len_b])
    })
}

/// `softmax(q k^T / sqrt(d)) v` per head, with the row statistics [`backward`] needs.
///
/// # Shapes
/// `q`: `[bh, nq, d]`, `k`: `[bh, nk, d]`, `v`: `[bh, nk, dv]` (row-major) -> `out`:
/// `[bh, nq, dv]`, `max`/`sum`: `[bh, nq]`.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], dims: Dims) -> Forward {
    let Dims { bh, nq, nk, d, dv } = dims;
    assert_eq!(q.len(), bh * nq * d, "attention: q is not [bh, nq, d]");
    assert_eq!(k.len(), bh * nk * d, "attention: k is not [bh, nk, d]");
    assert_eq!(v.len(), bh * nk * dv, "attention: v is not [bh, nk, dv]");
    let mut out = vec![0f32; bh * nq * dv];
    let mut max = vec![0f32; bh * nq];
    let mut sum = vec![0f32; bh * nq];
    if bh == 0 || nq == 0 || dv == 0 {
        return Forward { out, max, sum };
    }
    out.par_chunks_mut(nq * dv)
        .zip(max.par_chunks_mut(nq))
        .zip(sum.par_chunks_mut(nq))
        .enumerate()
        .for_each(|(h, ((out_h, max_h), sum_h))| {
            let (q_h, k_h, v_h) = (
                &q[h * nq * d..(h + 1) * nq * d],
                &k[h * nk * d..(h + 1) * nk * d],
                &v[h * nk * dv..(h + 1) * nk * dv],
            );
            out_h
                .par_chunks_mut(ROWS * dv)
                .zip(max_h.par_chunks_mut(ROWS))
                .zip(sum_h.par_chunks_mut(ROWS))
                .enumerate()
                .for_each(|(blk, ((out_b, max_b), sum_b))| {
                    let rows = max_b.len();
                    let q_b = &q_h[blk * ROWS * d..(blk * ROWS + rows) * d];
                    with_scratch(rows * nk, 0, |s, _| {
                        scores(s, q_b, k_h, rows, &dims);
                        for ((row, m), total) in
                            s.chunks_exact_mut(nk).zip(max_b.iter_mut()).zip(sum_b)
                        {
                            *m = row_max(row);
                            *total = exp_shift_sum(row, *m).max(f32::MIN_POSITIVE);
                            divide(row, *total);
                        }
                        matmul(
                            [rows, dv, nk],
                            out_b,
                            rm(dv),
                            false,
                            s,
                            rm(nk),
                            v_h,
                            rm(dv),
                            1.0,
                            false,
                        );
                    });
                });
        });
    Forward { out, max, sum }
}

/// What [`backward`] reads: the forward's inputs, output and row statistics, and the gradient
/// of the output.
///
/// # Shapes
/// `q`, `k`, `v` as for [`forward`]; `out`, `grad_out`: `[bh, nq, dv]`; `max`, `sum`: `[bh, nq]`
/// (what [`forward`] returned).
#[derive(Debug, Clone, Copy)]
pub struct Saved<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub out: &'a [f32],
    pub max: &'a [f32],
    pub sum: &'a [f32],
    pub grad_out: &'a [f32],
}

/// Gradients of the inputs of [`forward`] given the gradient of its output.
///
/// # Shapes
/// as [`Saved`] -> gradients shaped as `q`, `k`, `v`.
pub fn backward(saved: Saved<'_>, dims: Dims, wanted: Wanted) -> Backward {
    let Saved {
        out,
        max,
        sum,
        grad_out,
        ..
    } = saved;
    let Dims { bh, nq, nk, d, dv } = dims;
    assert_eq!(out.len(), bh * nq * dv, "attention backward: out shape");
    assert_eq!(
        grad_out.len(),
        bh * nq * dv,
        "attention backward: grad shape"
    );
    assert_eq!(max.len(), bh * nq, "attention backward: max shape");
    assert_eq!(sum.len(), bh * nq, "attention backward: sum shape");
    let mut dq = vec![0f32; if wanted.q { bh * nq * d } else { 0 }];
    let chunks = nq.div_ceil(CHUNK_ROWS).max(1);
    // Task `h * chunks + c` is head h's query chunk c, with its rows of dq when wanted.
    let dq_parts: Vec<Option<&mut [f32]>> = if wanted.q {
        (dq.chunks_mut((nq * d).max(1)))
            .flat_map(|dq_h| dq_h.chunks_mut((CHUNK_ROWS * d).max(1)))
            .map(Some)
            .collect()
    } else {
        (0..bh * chunks).map(|_| None).collect()
    };
    // Per task: that chunk's dk and dv contributions.
    let parts: Vec<ChunkParts> = dq_parts
        .into_par_iter()
        .enumerate()
        .map(|(i, dq_c)| backward_chunk(i / chunks, i % chunks, dq_c, &saved, dims, wanted))
        .collect();
    let scale = dims.scale();
    let reduce = |want: bool, width: usize, pick: fn(&ChunkParts) -> &Vec<f32>, factor: f32| {
        want.then(|| {
            let mut total = vec![0f32; bh * nk * width];
            total
                .par_chunks_mut((nk * width).max(1))
                .zip(parts.par_chunks(chunks))
                .for_each(|(t, head_parts)| {
                    for part in head_parts {
                        for (a, b) in t.iter_mut().zip(pick(part)) {
                            *a += *b;
                        }
                    }
                    if factor != 1.0 {
                        for a in t.iter_mut() {
                            *a *= factor;
                        }
                    }
                });
            total
        })
    };
    Backward {
        k: reduce(wanted.k, d, |p| &p.0, scale),
        v: reduce(wanted.v, dv, |p| &p.1, 1.0),
        q: wanted.q.then_some(dq),
    }
}

/// One query chunk's unscaled `dk` part `[nk, d]` and `dv` part `[nk, dv]`.
type ChunkParts = (Vec<f32>, Vec<f32>);

/// One head's query chunk `c`: writes its rows of `dq` (already scaled) and returns its
/// unscaled `dk` part `[nk, d]` and its `dv` part `[nk, dv]` (empty where not wanted).
fn backward_chunk(
    h: usize,
    c: usize,
    mut dq_c: Option<&mut [f32]>,
    saved: &Saved<'_>,
    dims: Dims,
    wanted: Wanted,
) -> ChunkParts {
    let Saved {
        q,
        k,
        v,
        out,
        max,
        sum,
        grad_out,
    } = *saved;
    let Dims { nq, nk, d, dv, .. } = dims;
    let need_ds = wanted.q || wanted.k;
    let (k_h, v_h) = (
        &k[h * nk * d..(h + 1) * nk * d],
        &v[h * nk * dv..(h + 1) * nk * dv],
    );
    let mut dk = vec![0f32; if wanted.k { nk * d } else { 0 }];
    let mut dv_part = vec![0f32; if wanted.v { nk * dv } else { 0 }];
    let start = c * CHUNK_ROWS;
    let end = (start + CHUNK_ROWS).min(nq);
    let mut g = vec![0f32; ROWS * dv];
    for (i, r0) in (start..end).step_by(ROWS).enumerate() {
        let rows = ROWS.min(end - r0);
        let row0 = h * nq + r0;
        let q_b = &q[row0 * d..(row0 + rows) * d];
        let o_b = &out[row0 * dv..(row0 + rows) * dv];
        let go_b = &grad_out[row0 * dv..(row0 + rows) * dv];
        let first = i == 0;
        with_scratch(rows * nk, if need_ds { rows * nk } else { 0 }, |e, dp| {
            scores(e, q_b, k_h, rows, &dims);
            for (r, row) in e.chunks_exact_mut(nk).enumerate() {
                exp_shift(row, max[row0 + r]);
            }
            // g = dO / s.
            let g = &mut g[..rows * dv];
            for r in 0..rows {
                let s = sum[row0 + r];
                for j in 0..dv {
                    g[r * dv + j] = go_b[r * dv + j] / s;
                }
            }
            if wanted.v {
                // dv += E^T g.
                matmul(
                    [nk, dv, rows],
                    &mut dv_part,
                    rm(dv),
                    !first,
                    e,
                    transposed(nk),
                    g,
                    rm(dv),
                    1.0,
                    false,
                );
            }
            if !need_ds {
                return;
            }
            // dP' = g v^T, then dS = E * (dP' - delta) in place of E.
            matmul(
                [rows, nk, dv],
                dp,
                rm(nk),
                false,
                g,
                rm(dv),
                v_h,
                transposed(dv),
                1.0,
                false,
            );
            for r in 0..rows {
                let mut dot = 0f32;
                for j in 0..dv {
                    dot += go_b[r * dv + j] * o_b[r * dv + j];
                }
                let delta = dot / sum[row0 + r];
                mul_shifted(
                    &mut e[r * nk..(r + 1) * nk],
                    &dp[r * nk..(r + 1) * nk],
                    delta,
                );
            }
            if let Some(dq_c) = dq_c.as_deref_mut() {
                // dq rows = dS k * scale.
                let local = r0 - start;
                matmul(
                    [rows, d, nk],
                    &mut dq_c[local * d..(local + rows) * d],
                    rm(d),
                    false,
                    e,
                    rm(nk),
                    k_h,
                    rm(d),
                    dims.scale(),
                    false,
                );
            }
            if wanted.k {
                // dk += dS^T q (scaled once the chunks are summed).
                matmul(
                    [nk, d, rows],
                    &mut dk,
                    rm(d),
                    !first,
                    e,
                    transposed(nk),
                    q_b,
                    rm(d),
                    1.0,
                    false,
                );
            }
        });
    }
    (dk, dv_part)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward f64 attention of one head, for the kernel's tests.
    fn naive(q: &[f32], k: &[f32], v: &[f32], dims: Dims, h: usize) -> Vec<f64> {
        let Dims { nq, nk, d, dv, .. } = dims;
        let scale = (d as f64).powf(-0.5);
        let mut out = vec![0f64; nq * dv];
        for i in 0..nq {
            let s: Vec<f64> = (0..nk)
                .map(|j| {
                    (0..d)
                        .map(|t| q[(h * nq + i) * d + t] as f64 * k[(h * nk + j) * d + t] as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for j in 0..nk {
                for t in 0..dv {
                    out[i * dv + t] += e[j] / z * v[(h * nk + j) * dv + t] as f64;
                }
            }
        }
        out
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.7131 + seed as f32 * 1.37).sin() * 2.0)
            .collect()
    }

    #[test]
    fn forward_matches_f64_across_blocks_and_chunks() {
        // 2.5 ROWS blocks of query rows, the last partial.
        let dims = Dims {
            bh: 3,
            nq: 2 * ROWS + ROWS / 2,
            nk: 70,
            d: 8,
            dv: 5,
        };
        let q = data(dims.bh * dims.nq * dims.d, 1);
        let k = data(dims.bh * dims.nk * dims.d, 2);
        let v = data(dims.bh * dims.nk * dims.dv, 3);
        let f = forward(&q, &k, &v, dims);
        for h in 0..dims.bh {
            let want = naive(&q, &k, &v, dims, h);
            let got = &f.out[h * dims.nq * dims.dv..(h + 1) * dims.nq * dims.dv];
            for (a, b) in got.iter().zip(&want) {
                // f32 products over 8 and sums over 70 terms: ~1e-6 absolute at |v| <= 2.
                assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}
