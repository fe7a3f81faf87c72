//! The weight gradient of a stride-1 2-D convolution by shifted matrix products (the layout of
//! [`super::conv`]).
//!
//! Burn computes a convolution's weight gradient as another convolution: the input with batch
//! and channels swapped, convolved with the output gradient as its kernel (`burn-backend`
//! `conv2d_weight_grad_no_groups`). On flex that is one im2col product per input channel whose
//! output has only `kH * kW` rows (9 for a 3x3 kernel): gemm's narrowest, slowest tiles, over
//! the whole plane. Here, with the input zero-padded to `[C_in, Hp, Wp]` and the output
//! gradient laid on the same "wide" grid as the forward's output (`Wp` columns per row, zeros
//! in the `kW - 1` columns the forward discards), the gradient of kernel tap `(i, j)` is
//!
//! `dW[:, :, i, j] = sum over b of G_b @ xp_b[:, i * Wp + j ..]^T`,
//!
//! one `[C_out, wide pixels] x [wide pixels, C_in]` product per tap and sample, written into the
//! weight's layout with strides. The zero columns make the discarded wide pixels contribute
//! nothing; every other wide pixel reads exactly the padded input the forward read.
//!
//! Summation order (fixed for a shape, whatever the number of threads): sample after sample,
//! each sample's sum over pixels in gemm's order (gemm splits the output's rows and columns over
//! threads, never the sum).

use super::conv::{Dims, PARALLEL_WORK, check, pad};
use super::matmul::matmul;
use rayon::prelude::*;

/// The gradient of the convolution's weight given its input `x` `[batch, c_in, h, w]` and its
/// output's gradient `grad` `[batch, c_out, h', w']`, both contiguous row-major.
///
/// # Shapes
/// -> `[c_out, c_in, kh, kw]`, row-major.
pub fn weight_grad(x: &[f32], grad: &[f32], dims: Dims) -> Vec<f32> {
    let Dims {
        batch,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        ph,
        pw,
    } = dims;
    let taps = kh * kw;
    check(&dims, x.len(), c_out * c_in * taps);
    let [oh, ow] = dims.out_hw();
    assert_eq!(
        grad.len(),
        batch * c_out * oh * ow,
        "conv weight gradient: grad must be [{batch}, {c_out}, {oh}, {ow}]"
    );
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    let (plane, padded_plane, out_plane) = (h * w, hp * wp, oh * ow);
    let n = (oh - 1) * wp + ow;
    let mut out = vec![0f32; c_out * c_in * taps];
    let mut padded = if ph == 0 && pw == 0 {
        Vec::new()
    } else {
        vec![0f32; c_in * padded_plane]
    };
    let mut wide = if ow == wp {
        Vec::new()
    } else {
        vec![0f32; c_out * n]
    };
    let parallel = c_out * c_in * n >= PARALLEL_WORK;
    for b in 0..batch {
        let x_b = &x[b * c_in * plane..(b + 1) * c_in * plane];
        let input: &[f32] = if padded.is_empty() {
            x_b
        } else {
            pad(x_b, &mut padded, [h, w], [ph, pw]);
            &padded
        };
        let g_b = &grad[b * c_out * out_plane..(b + 1) * c_out * out_plane];
        let g: &[f32] = if wide.is_empty() {
            g_b
        } else {
            spread(g_b, &mut wide, [oh, ow], wp);
            &wide
        };
        for t in 0..taps {
            let (i, j) = (t / kw, t % kw);
            matmul(
                [c_out, c_in, n],
                &mut out[t..],
                [(c_in * taps) as isize, taps as isize],
                b > 0,
                g,
                [n as isize, 1],
                &input[i * wp + j..],
                [1, padded_plane as isize],
                1.0,
                parallel,
            );
        }
    }
    out
}

/// Lays `src` `[rows, oh, ow]` on a wide grid: row `y` of each plane at `y * wp` of its run of
/// `(oh - 1) * wp + ow` (the inverse of the forward's compaction). The columns in between stay
/// zero: they are only ever written here, always at the same places.
fn spread(src: &[f32], wide: &mut [f32], [oh, ow]: [usize; 2], wp: usize) {
    let n = (oh - 1) * wp + ow;
    wide.par_chunks_mut(n)
        .zip(src.par_chunks(oh * ow))
        .for_each(|(dst, src)| {
            for (y, row) in src.chunks_exact(ow).enumerate() {
                dst[y * wp..y * wp + ow].copy_from_slice(row);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::super::conv::forward;
    use super::super::conv::tests::{
        TOLERANCE, dot, parallel_shape, relative_error, shapes, taps, values,
    };
    use super::*;

    /// The weight gradient by its definition (each weight collects every product it entered),
    /// in f64.
    fn naive_weight_grad(x: &[f32], g: &[f32], d: Dims) -> Vec<f64> {
        let mut out = vec![0f64; d.c_out * d.c_in * d.kh * d.kw];
        for [xi, wi, oi] in taps(d) {
            out[wi] += x[xi] as f64 * g[oi] as f64;
        }
        out
    }

    #[test]
    fn weight_grad_matches_the_definition_and_the_forward() {
        for (n, d) in shapes().into_iter().enumerate() {
            let [oh, ow] = d.out_hw();
            let x = values(d.batch * d.c_in * d.h * d.w, 600 + n as u64);
            let g = values(d.batch * d.c_out * oh * ow, 700 + n as u64);
            let got = weight_grad(&x, &g, d);
            let err = relative_error(&got, &naive_weight_grad(&x, &g, d));
            assert!(err < TOLERANCE, "{d:?}: {err}");
            // <conv(x; w), g> is linear in w with gradient dW: for any w, <w, dW> equals it.
            let w = values(d.c_out * d.c_in * d.kh * d.kw, 800 + n as u64);
            let y = forward(&x, &w, None, d);
            let (lhs, rhs) = (dot(&y, &g), dot(&w, &got));
            assert!(
                (lhs - rhs).abs() <= 1e-5 * lhs.abs().max(1.0),
                "{d:?}: {lhs} vs {rhs}"
            );
        }
    }

    #[test]
    fn weight_grad_does_not_depend_on_the_thread_count() {
        let d = parallel_shape();
        let [oh, ow] = d.out_hw();
        let x = values(d.batch * d.c_in * d.h * d.w, 1);
        let g = values(d.batch * d.c_out * oh * ow, 4);
        let run = |threads| super::super::in_pool(threads, || weight_grad(&x, &g, d));
        let one = run(1);
        for threads in [2, 3, 8] {
            assert!(one == run(threads), "{threads} threads differ from one");
        }
        assert!(relative_error(&one, &naive_weight_grad(&x, &g, d)) < TOLERANCE);
    }
}
