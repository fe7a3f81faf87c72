//! The transpose of row-major `[B, M, N]` f32 data in parallel bands.

use rayon::prelude::*;

/// Destination rows per task, and source rows per step inside it: a step's source rows and the
/// band's destination rows stay in cache together.
const TILE: usize = 32;

/// `out[b, j, i] = x[b, i, j]`.
///
/// # Shapes
/// `x`: `[b, m, n]` row-major -> `[b, n, m]` row-major.
pub fn forward(x: &[f32], [b, m, n]: [usize; 3]) -> Vec<f32> {
    assert_eq!(x.len(), b * m * n, "transpose: x is not [{b}, {m}, {n}]");
    let mut out = vec![0f32; x.len()];
    if x.is_empty() {
        return out;
    }
    out.par_chunks_mut(n * m)
        .zip(x.par_chunks(m * n))
        .for_each(|(out, src)| {
            // Bands of TILE destination rows (source columns j0..j0 + rows).
            out.par_chunks_mut(TILE * m)
                .enumerate()
                .for_each(|(band_index, band)| {
                    let j0 = band_index * TILE;
                    let rows = band.len() / m;
                    for i0 in (0..m).step_by(TILE) {
                        for i in i0..(i0 + TILE).min(m) {
                            let row = &src[i * n + j0..i * n + j0 + rows];
                            for (jj, &v) in row.iter().enumerate() {
                                band[jj * m + i] = v;
                            }
                        }
                    }
                });
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_every_batch_element() {
        // Sides that are not multiples of the tile, and a batch of 3.
        for [b, m, n] in [[3, 37, 70], [1, 1, 5], [2, 64, 32], [1, 5, 1]] {
            let x: Vec<f32> = (0..b * m * n).map(|i| i as f32).collect();
            let out = forward(&x, [b, m, n]);
            for bi in 0..b {
                for i in 0..m {
                    for j in 0..n {
                        assert_eq!(out[(bi * n + j) * m + i], x[(bi * m + i) * n + j]);
                    }
                }
            }
        }
    }
}
