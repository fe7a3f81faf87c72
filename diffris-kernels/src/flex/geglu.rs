//! GEGLU on f32 slices, in parallel over rows, with exactly the element formulas of Burn's flex
//! (`gelu`: `0.5 * x * (1 + erf(x / sqrt 2))` with the `libm` crate's `erff`; `gelu_backward`:
//! `g * (cdf + x * pdf)`), so the results are flex's composed ones bit for bit. Flex runs those
//! element loops on one thread, through a generic strided iterator when the operand is a half
//! of the projection (a strided view).

use rayon::prelude::*;

/// Rows per rayon task at least (a row is 4C values: 1280 to 5120 in SD-1.5).
const MIN_ROWS: usize = 16;

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x / std::f32::consts::SQRT_2))
}

/// `out[r, j] = a[r, j] * gelu(gate[r, j])` where row `r` of `h` is `[a | gate]`.
///
/// # Shapes
/// `h`: `[rows, 2I]` row-major -> `[rows, I]`.
pub fn forward(h: &[f32], inner: usize) -> Vec<f32> {
    assert!(
        inner > 0 && h.len().is_multiple_of(2 * inner),
        "GEGLU: h is not [rows, 2 * {inner}]"
    );
    let mut out = vec![0f32; h.len() / 2];
    out.par_chunks_mut(inner)
        .zip(h.par_chunks(2 * inner))
        .with_min_len(MIN_ROWS)
        .for_each(|(o, row)| {
            let (a, gate) = row.split_at(inner);
            for ((o, a), x) in o.iter_mut().zip(a).zip(gate) {
                *o = *a * gelu(*x);
            }
        });
    out
}

/// The gradient of `h` given the gradient `grad` of [`forward`]'s output: row `r` is
/// `[grad * gelu(gate) | (grad * a) * (cdf(gate) + gate * pdf(gate))]`.
///
/// # Shapes
/// `h`: `[rows, 2I]`, `grad`: `[rows, I]` -> `[rows, 2I]`.
pub fn backward(h: &[f32], grad: &[f32], inner: usize) -> Vec<f32> {
    assert!(
        inner > 0 && h.len().is_multiple_of(2 * inner),
        "GEGLU: h is not [rows, 2 * {inner}]"
    );
    assert_eq!(
        grad.len() * 2,
        h.len(),
        "GEGLU backward: grad is not [rows, {inner}]"
    );
    let inv_sqrt_2pi: f32 = 1.0 / (2.0 * std::f32::consts::PI).sqrt();
    let mut dh = vec![0f32; h.len()];
    dh.par_chunks_mut(2 * inner)
        .zip(h.par_chunks(2 * inner))
        .zip(grad.par_chunks(inner))
        .with_min_len(MIN_ROWS)
        .for_each(|((d, row), g_row)| {
            let (a, gate) = row.split_at(inner);
            let (da, dgate) = d.split_at_mut(inner);
            for j in 0..inner {
                let (x, g) = (gate[j], g_row[j]);
                da[j] = g * gelu(x);
                let d_gelu = g * a[j];
                let cdf = 0.5 * (1.0 + libm::erff(x / std::f32::consts::SQRT_2));
                let pdf = inv_sqrt_2pi * (-0.5 * x * x).exp();
                dgate[j] = d_gelu * (cdf + x * pdf);
            }
        });
    dh
}
