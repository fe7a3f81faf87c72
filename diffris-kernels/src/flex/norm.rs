//! Group and layer normalisation on f32 slices, forward and input gradient, in parallel rows.
//!
//! On flex the composed normalisation (mean, subtraction, square, mean, square root, division,
//! the affine product and sum, and each of their gradients) runs as a dozen single-threaded
//! element passes per layer. Here one pass computes a row's statistics, one more its output;
//! the backward two. The arithmetic of the output is the composition's, `(x - mean) / std *
//! gamma + beta` with `std = sqrt(var + eps)` and the biased variance, with the row sums taken
//! in f64 (the composition sums in f32), so outputs agree to f32 rounding.

use rayon::prelude::*;

pub use crate::norm::Rows;

/// Rows of layer norm are short (one token's channels): several per task.
fn min_rows(rows: &Rows) -> usize {
    (4096 / rows.len().max(1)).max(1)
}

/// What [`forward`] returns: the output, and per row the mean and `sqrt(var + eps)`.
#[derive(Debug, Clone)]
pub struct Forward {
    pub out: Vec<f32>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// `(x - mean) / std * gamma + beta` per row (no affine where `gamma` / `beta` are `None`).
///
/// # Shapes
/// `x`: `[rows, channels * spatial]`, `gamma`, `beta`: `[groups * channels]` -> the same as
/// `x`, and `[rows]` twice.
pub fn forward(
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    shape: Rows,
    eps: f32,
) -> Forward {
    check(x.len(), gamma, beta, &shape);
    let n = shape.len();
    let mut out = vec![0f32; x.len()];
    let mut mean = vec![0f32; shape.rows];
    let mut std = vec![0f32; shape.rows];
    if n == 0 {
        return Forward { out, mean, std };
    }
    out.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .zip(mean.par_iter_mut().zip(std.par_iter_mut()))
        .enumerate()
        .with_min_len(min_rows(&shape))
        .for_each(|(r, ((out, x), (mean, std)))| {
            let m = (x.iter().map(|&v| v as f64).sum::<f64>() / n as f64) as f32;
            let var = x
                .iter()
                .map(|&v| {
                    let d = (v - m) as f64;
                    d * d
                })
                .sum::<f64>()
                / n as f64;
            let s = (var as f32 + eps).sqrt();
            (*mean, *std) = (m, s);
            for (c, (out, x)) in out
                .chunks_exact_mut(shape.spatial)
                .zip(x.chunks_exact(shape.spatial))
                .enumerate()
            {
                let p = shape.param(r, c);
                let (g, b) = (gamma.map(|g| g[p]), beta.map(|b| b[p]));
                for (o, &v) in out.iter_mut().zip(x) {
                    let y = (v - m) / s;
                    let y = g.map_or(y, |g| y * g);
                    *o = b.map_or(y, |b| y + b);
                }
            }
        });
    Forward { out, mean, std }
}

/// The gradient of [`forward`]'s input given its output's gradient `grad` (`gamma` and `beta`
/// take none): with `xhat = (x - mean) / std` and `gy = grad * gamma`,
/// `dx = (gy - rowmean(gy) - xhat * rowmean(gy * xhat)) / std`.
///
/// # Shapes
/// `x`, `grad`: `[rows, channels * spatial]`, `mean`, `std`: `[rows]` -> the same as `x`.
pub fn backward(
    x: &[f32],
    mean: &[f32],
    std: &[f32],
    gamma: Option<&[f32]>,
    grad: &[f32],
    shape: Rows,
) -> Vec<f32> {
    check(x.len(), gamma, None, &shape);
    assert_eq!(
        grad.len(),
        x.len(),
        "norm backward: grad and x differ in size"
    );
    assert!(
        mean.len() == shape.rows && std.len() == shape.rows,
        "norm backward: statistics"
    );
    let n = shape.len();
    let mut dx = vec![0f32; x.len()];
    if n == 0 {
        return dx;
    }
    dx.par_chunks_mut(n)
        .zip(x.par_chunks(n).zip(grad.par_chunks(n)))
        .enumerate()
        .with_min_len(min_rows(&shape))
        .for_each(|(r, (dx, (x, grad)))| {
            let (m, s) = (mean[r], std[r]);
            // Per channel: its gamma and its run of `spatial` elements.
            let channels =
                || (0..shape.channels).map(|c| gamma.map_or(1.0, |g| g[shape.param(r, c)]));
            let (mut sum_gy, mut sum_gy_xhat) = (0f64, 0f64);
            let runs = x
                .chunks_exact(shape.spatial)
                .zip(grad.chunks_exact(shape.spatial));
            for (gamma, (x, grad)) in channels().zip(runs) {
                for (&v, &g) in x.iter().zip(grad) {
                    let gy = (g * gamma) as f64;
                    sum_gy += gy;
                    sum_gy_xhat += gy * ((v - m) / s) as f64;
                }
            }
            let (a, b) = ((sum_gy / n as f64) as f32, (sum_gy_xhat / n as f64) as f32);
            let runs = dx.chunks_exact_mut(shape.spatial).zip(
                x.chunks_exact(shape.spatial)
                    .zip(grad.chunks_exact(shape.spatial)),
            );
            for (gamma, (dx, (x, grad))) in channels().zip(runs) {
                for (d, (&v, &g)) in dx.iter_mut().zip(x.iter().zip(grad)) {
                    let xhat = (v - m) / s;
                    *d = (g * gamma - a - xhat * b) / s;
                }
            }
        });
    dx
}

fn check(len: usize, gamma: Option<&[f32]>, beta: Option<&[f32]>, shape: &Rows) {
    assert!(shape.groups > 0, "norm: no groups");
    assert_eq!(
        len,
        shape.rows * shape.len(),
        "norm: x does not fit {shape:?}"
    );
    for p in [gamma, beta].into_iter().flatten() {
        assert_eq!(
            p.len(),
            shape.groups * shape.channels,
            "norm: affine parameters do not fit {shape:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.618 + seed as f32 * 1.7).sin() * 3.0 + seed as f32 * 0.1)
            .collect()
    }

    /// The normalisation and its input gradient by definition, in f64: the gradient of
    /// `sum(out * w)` by central differences of the f64 forward.
    fn naive(x: &[f32], gamma: &[f32], beta: &[f32], shape: Rows, eps: f64) -> Vec<f64> {
        let n = shape.len();
        let mut out = vec![0f64; x.len()];
        for r in 0..shape.rows {
            let row = &x[r * n..(r + 1) * n];
            let m = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
            for i in 0..n {
                let p = shape.param(r, i / shape.spatial);
                out[r * n + i] =
                    (row[i] as f64 - m) / (var + eps).sqrt() * gamma[p] as f64 + beta[p] as f64;
            }
        }
        out
    }

    const SHAPES: [Rows; 3] = [
        // group norm: batch 2, 3 groups of 2 channels, 5x4 maps
        Rows {
            rows: 6,
            groups: 3,
            channels: 2,
            spatial: 20,
        },
        // layer norm: 7 tokens of 12 channels
        Rows {
            rows: 7,
            groups: 1,
            channels: 12,
            spatial: 1,
        },
        // one channel per group (instance-norm-like)
        Rows {
            rows: 4,
            groups: 4,
            channels: 1,
            spatial: 9,
        },
    ];

    #[test]
    fn forward_matches_the_definition() {
        for shape in SHAPES {
            let x = data(shape.rows * shape.len(), 1);
            let gamma = data(shape.groups * shape.channels, 2);
            let beta = data(shape.groups * shape.channels, 3);
            let f = forward(&x, Some(&gamma), Some(&beta), shape, 1e-5);
            let want = naive(&x, &gamma, &beta, shape, 1e-5);
            for (got, want) in f.out.iter().zip(&want) {
                // Outputs of magnitude ~10 (|xhat| < 3, |gamma|, |beta| < 3.5): f32 rounding
                // of a few operations, ~1e-6 absolute.
                assert!(
                    (*got as f64 - want).abs() < 1e-5,
                    "{shape:?}: {got} vs {want}"
                );
            }
            // Without affine parameters: the plain normalisation (gamma 1, beta 0).
            let plain = forward(&x, None, None, shape, 1e-5);
            let ones = vec![1f32; gamma.len()];
            let zeros = vec![0f32; gamma.len()];
            let want = naive(&x, &ones, &zeros, shape, 1e-5);
            for (got, want) in plain.out.iter().zip(&want) {
                assert!(
                    (*got as f64 - want).abs() < 1e-5,
                    "{shape:?}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for shape in SHAPES {
            let x = data(shape.rows * shape.len(), 4);
            let gamma = data(shape.groups * shape.channels, 5);
            let beta = data(shape.groups * shape.channels, 6);
            let w = data(x.len(), 7);
            let f = forward(&x, Some(&gamma), Some(&beta), shape, 1e-5);
            let dx = backward(&x, &f.mean, &f.std, Some(&gamma), &w, shape);
            let loss = |x: &[f32]| -> f64 {
                naive(x, &gamma, &beta, shape, 1e-5)
                    .iter()
                    .zip(&w)
                    .map(|(o, w)| o * *w as f64)
                    .sum()
            };
            let scale = dx.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            for i in 0..x.len() {
                // Central differences in f64 through an f32 input: h = 1e-2 keeps the step
                // exact in f32 and the truncation error (h^2 * third derivative) near 1e-5.
                let h = 1e-2f32;
                let (mut up, mut down) = (x.clone(), x.clone());
                up[i] += h;
                down[i] -= h;
                let fd = (loss(&up) - loss(&down)) / (2.0 * h as f64);
                assert!(
                    (dx[i] as f64 - fd).abs() < 2e-3 * scale.max(1.0),
                    "{shape:?} element {i}: {} vs {fd}",
                    dx[i]
                );
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let shape = Rows {
            rows: 64,
            groups: 32,
            channels: 3,
            spatial: 50,
        };
        let x = data(shape.rows * shape.len(), 8);
        let gamma = data(shape.groups * shape.channels, 9);
        let grad = data(x.len(), 10);
        let run = |threads| {
            super::super::in_pool(threads, || {
                let f = forward(&x, Some(&gamma), None, shape, 1e-6);
                let dx = backward(&x, &f.mean, &f.std, Some(&gamma), &grad, shape);
                (f.out, dx)
            })
        };
        let one = run(1);
        for threads in [2, 5] {
            assert!(one == run(threads), "{threads} threads differ from one");
        }
    }
}
