//! Stride-1 2-D convolution on f32 slices as a sum of shifted matrix products, and the input
//! gradient of such a convolution by the same routine.
//!
//! Burn's flex convolves through im2col: per call it reorders the input to channels-last and
//! the weight to `[C_out, kH, kW, C_in]` on one thread (the weight of a 1280-channel 3x3 layer
//! is 59 MB), multiplies 512-pixel tiles, and scatters each tile's result back to channels-first
//! element by element. Its input gradient is a transposed convolution with the same overheads.
//! The SD-1.5 UNet's 3x3 layers are stride 1 apart from the three downsamplers, so this module
//! covers stride 1 without any of that:
//!
//! With the input zero-padded to `[C_in, Hp, Wp]` (one parallel copy) and the output computed
//! on a "wide" grid of `Wp` columns per row (the last `kW - 1` of each row are discarded), the
//! contribution of kernel tap `(i, j)` to output pixel `q = oh * Wp + ow` is
//! `W[:, :, i, j] @ xp[:, q + i * Wp + j]`: a matrix product whose right-hand side is the padded
//! input itself at a fixed offset, and whose left-hand side is the weight read with strides (no
//! copy). The `kH * kW` products accumulate into one `[C_out, wide pixels]` buffer, which is
//! then compacted to `[C_out, H', W']` in parallel.
//!
//! The input gradient of a stride-1 convolution is the same computation on the output gradient:
//! padded by `k - 1 - p`, with the taps flipped and the weight read transposed
//! (`W[:, :, kH - 1 - i, kW - 1 - j]^T`).
//!
//! Summation order (fixed for a shape, whatever the number of threads): the bias (or zero), then
//! tap after tap in row-major tap order, each tap's sum over channels in gemm's order. It differs
//! from flex's im2col order, so results agree with flex's to rounding, not bit for bit.

use rayon::prelude::*;

use super::matmul::matmul;

/// Below this many multiply-adds a product runs on one thread (flex's threshold for its
/// convolution's products).
pub(super) const PARALLEL_WORK: usize = 192 * 192 * 192;

/// The shape of a stride-1, dilation-1, ungrouped convolution: input `[batch, c_in, h, w]`,
/// weight `[c_out, c_in, kh, kw]`, zero padding `ph` rows above and below, `pw` columns left
/// and right (each smaller than the kernel's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl Dims {
    /// The output's height and width.
    pub fn out_hw(&self) -> [usize; 2] {
        [
            (self.h + 2 * self.ph + 1).saturating_sub(self.kh),
            (self.w + 2 * self.pw + 1).saturating_sub(self.kw),
        ]
    }

    /// Whether [`forward`] and [`input_grad`] take this shape.
    pub fn supported(&self) -> bool {
        let [oh, ow] = self.out_hw();
        self.kh > 0 && self.kw > 0 && self.ph < self.kh && self.pw < self.kw && oh > 0 && ow > 0
    }
}

/// The convolution: `x` `[batch, c_in, h, w]`, `weight` `[c_out, c_in, kh, kw]`, `bias`
/// `[c_out]`, all contiguous row-major; by shifted products or through one im2col product,
/// whichever [`im2col_pays`] picks for the shape.
///
/// # Shapes
/// -> `[batch, c_out, h + 2 ph - kh + 1, w + 2 pw - kw + 1]`, row-major.
pub fn forward(x: &[f32], weight: &[f32], bias: Option<&[f32]>, dims: Dims) -> Vec<f32> {
    let [oh, ow] = dims.out_hw();
    if im2col_pays(dims.kh * dims.kw, [dims.c_out, dims.c_in], oh * ow) {
        forward_im2col(x, weight, bias, dims)
    } else {
        forward_shifted(x, weight, bias, dims)
    }
}

/// The gradient of [`forward`]'s input given its output's gradient `grad`
/// `[batch, c_out, h', w']` (the weight's and bias's gradients are not computed); by shifted
/// products or through one product and a col2im scatter, whichever [`im2col_pays`] picks.
///
/// # Shapes
/// -> `[batch, c_in, h, w]`, row-major.
pub fn input_grad(grad: &[f32], weight: &[f32], dims: Dims) -> Vec<f32> {
    if im2col_pays(dims.kh * dims.kw, [dims.c_in, dims.c_out], dims.h * dims.w) {
        input_grad_col2im(grad, weight, dims)
    } else {
        input_grad_shifted(grad, weight, dims)
    }
}

/// Whether a convolution with `taps` kernel taps, `[rows, channels]` weight matrices per tap
/// (output rows, channels summed over) and `pixels` output pixels per plane is faster through
/// one im2col product than through shifted products (measured on SD-1.5's shapes with
/// `examples/conv_speed.rs`). The shifted products read the weight with a stride of `taps`
/// elements once per tap: that traffic dominates when the planes are small (the UNet's 32x32
/// and lower levels, 1.1-2.6x slower there than im2col), and products with few rows or
/// channels (the UNet's 4-channel input) run far below the gemm kernel's speed. im2col instead
/// writes and reads `taps` copies of the input: at the 64x64 level 1.3-1.4x slower than the
/// shifted products, and at the VAE's 512x512 planes a gigabyte-sized buffer. A 1x1 kernel is
/// one plain product either way.
fn im2col_pays(taps: usize, [rows, channels]: [usize; 2], pixels: usize) -> bool {
    taps > 1 && (pixels < 2048 || rows < 64 || channels < 64)
}

/// [`forward`] by shifted products (the module documentation).
///
/// # Shapes
/// -> `[batch, c_out, h', w']`, row-major.
pub fn forward_shifted(x: &[f32], weight: &[f32], bias: Option<&[f32]>, dims: Dims) -> Vec<f32> {
    check(&dims, x.len(), weight.len());
    if let Some(bias) = bias {
        assert_eq!(bias.len(), dims.c_out, "conv: bias length");
    }
    let Dims {
        c_in,
        kh,
        kw,
        c_out,
        ..
    } = dims;
    shifted_products(
        x,
        Source {
            batch: dims.batch,
            channels: c_in,
            h: dims.h,
            w: dims.w,
            pad: [dims.ph, dims.pw],
            kernel: [kh, kw],
        },
        Weight {
            data: weight,
            rows: c_out,
            strides: [(c_in * kh * kw) as isize, (kh * kw) as isize],
            flipped: false,
        },
        bias,
    )
}

/// [`input_grad`] by shifted products (the module documentation).
///
/// # Shapes
/// -> `[batch, c_in, h, w]`, row-major.
pub fn input_grad_shifted(grad: &[f32], weight: &[f32], dims: Dims) -> Vec<f32> {
    let [oh, ow] = dims.out_hw();
    check(
        &dims,
        dims.batch * dims.c_in * dims.h * dims.w,
        weight.len(),
    );
    assert_eq!(
        grad.len(),
        dims.batch * dims.c_out * oh * ow,
        "conv input gradient: grad must be [{}, {}, {oh}, {ow}]",
        dims.batch,
        dims.c_out
    );
    let Dims {
        c_in,
        kh,
        kw,
        c_out,
        ..
    } = dims;
    shifted_products(
        grad,
        Source {
            batch: dims.batch,
            channels: c_out,
            h: oh,
            w: ow,
            pad: [kh - 1 - dims.ph, kw - 1 - dims.pw],
            kernel: [kh, kw],
        },
        Weight {
            data: weight,
            rows: c_in,
            strides: [(kh * kw) as isize, (c_in * kh * kw) as isize],
            flipped: true,
        },
        None,
    )
}

pub(super) fn check(dims: &Dims, x_len: usize, weight_len: usize) {
    assert!(dims.supported(), "conv: unsupported shape {dims:?}");
    assert_eq!(
        x_len,
        dims.batch * dims.c_in * dims.h * dims.w,
        "conv: input must be [{}, {}, {}, {}]",
        dims.batch,
        dims.c_in,
        dims.h,
        dims.w
    );
    assert_eq!(
        weight_len,
        dims.c_out * dims.c_in * dims.kh * dims.kw,
        "conv: weight must be [{}, {}, {}, {}]",
        dims.c_out,
        dims.c_in,
        dims.kh,
        dims.kw
    );
}

/// The tensor the taps slide over: `[batch, channels, h, w]`, padded by `pad` (rows, columns)
/// and read through a `kernel` of taps.
struct Source {
    batch: usize,
    channels: usize,
    h: usize,
    w: usize,
    pad: [usize; 2],
    kernel: [usize; 2],
}

/// The left-hand side of the products: for tap `(i, j)` the `[rows, channels]` matrix at
/// element `i * kw + j` of `data` (or `(kh - 1 - i) * kw + kw - 1 - j` when `flipped`), with
/// (row, column) `strides`.
struct Weight<'a> {
    data: &'a [f32],
    rows: usize,
    strides: [isize; 2],
    flipped: bool,
}

/// `out[b, r, y, x] = bias[r] + sum over taps (i, j) and channels c of
/// weight(i, j)[r, c] * padded[b, c, y + i, x + j]`.
///
/// # Shapes
/// `src` `[batch, channels, h, w]` -> `[batch, rows, h + 2 pad_h - kh + 1, w + 2 pad_w - kw + 1]`.
fn shifted_products(src: &[f32], s: Source, weight: Weight, bias: Option<&[f32]>) -> Vec<f32> {
    let [kh, kw] = s.kernel;
    let [ph, pw] = s.pad;
    let (hp, wp) = (s.h + 2 * ph, s.w + 2 * pw);
    let (oh, ow) = (hp + 1 - kh, wp + 1 - kw);
    let plane = s.h * s.w;
    let padded_plane = hp * wp;
    // Wide pixels: every row of Wp columns except the last row's discarded tail, so that the
    // furthest tap of the last pixel reads the padded plane's last element.
    let n = (oh - 1) * wp + ow;
    let out_plane = oh * ow;
    let mut out = vec![0f32; s.batch * weight.rows * out_plane];
    let mut padded = if ph == 0 && pw == 0 {
        Vec::new()
    } else {
        vec![0f32; s.channels * padded_plane]
    };
    let mut wide = if ow == wp {
        Vec::new()
    } else {
        vec![0f32; weight.rows * n]
    };
    let parallel = weight.rows * n * s.channels >= PARALLEL_WORK;
    for b in 0..s.batch {
        let src_b = &src[b * s.channels * plane..(b + 1) * s.channels * plane];
        let input: &[f32] = if padded.is_empty() {
            src_b
        } else {
            pad(src_b, &mut padded, [s.h, s.w], [ph, pw]);
            &padded
        };
        let out_b = &mut out[b * weight.rows * out_plane..(b + 1) * weight.rows * out_plane];
        // Without discarded columns the wide grid is the output itself.
        let dst: &mut [f32] = if wide.is_empty() { out_b } else { &mut wide };
        if let Some(bias) = bias {
            dst.par_chunks_mut(n)
                .zip(bias.par_iter())
                .for_each(|(row, &v)| row.fill(v));
        }
        for i in 0..kh {
            for j in 0..kw {
                let tap = if weight.flipped {
                    (kh - 1 - i) * kw + (kw - 1 - j)
                } else {
                    i * kw + j
                };
                let first = i == 0 && j == 0;
                matmul(
                    [weight.rows, n, s.channels],
                    dst,
                    [n as isize, 1],
                    bias.is_some() || !first,
                    &weight.data[tap..],
                    weight.strides,
                    &input[i * wp + j..],
                    [padded_plane as isize, 1],
                    1.0,
                    parallel,
                );
            }
        }
        if !wide.is_empty() {
            let out_b = &mut out[b * weight.rows * out_plane..(b + 1) * weight.rows * out_plane];
            compact(&wide, out_b, [oh, ow], wp);
        }
    }
    out
}

/// The forward through one product: the shifted windows of the padded input laid out as
/// `cols` `[c_in * kh * kw, wide pixels]` (row `(c, i, j)` is the padded plane `c` from offset
/// `i * Wp + j`: one contiguous copy), multiplied by the weight as it is stored, `[c_out, c_in *
/// kh * kw]` row-major.
///
/// # Shapes
/// `x` `[batch, c_in, h, w]` -> `[batch, c_out, h', w']`.
pub fn forward_im2col(x: &[f32], weight: &[f32], bias: Option<&[f32]>, d: Dims) -> Vec<f32> {
    check(&d, x.len(), weight.len());
    let (hp, wp) = (d.h + 2 * d.ph, d.w + 2 * d.pw);
    let [oh, ow] = d.out_hw();
    let taps = d.kh * d.kw;
    let n = (oh - 1) * wp + ow;
    let (plane, padded_plane, out_plane) = (d.h * d.w, hp * wp, oh * ow);
    let rows = d.c_in * taps;
    let mut padded = vec![0f32; d.c_in * padded_plane];
    let mut cols = vec![0f32; rows * n];
    let mut wide = vec![0f32; d.c_out * n];
    let mut out = vec![0f32; d.batch * d.c_out * out_plane];
    let parallel = d.c_out * n * rows >= PARALLEL_WORK;
    for b in 0..d.batch {
        pad(
            &x[b * d.c_in * plane..(b + 1) * d.c_in * plane],
            &mut padded,
            [d.h, d.w],
            [d.ph, d.pw],
        );
        cols.par_chunks_mut(n).enumerate().for_each(|(row, dst)| {
            let (c, t) = (row / taps, row % taps);
            let start = c * padded_plane + (t / d.kw) * wp + t % d.kw;
            dst.copy_from_slice(&padded[start..start + n]);
        });
        if let Some(bias) = bias {
            wide.par_chunks_mut(n)
                .zip(bias.par_iter())
                .for_each(|(row, &v)| row.fill(v));
        }
        matmul(
            [d.c_out, n, rows],
            &mut wide,
            [n as isize, 1],
            bias.is_some(),
            weight,
            [rows as isize, 1],
            &cols,
            [n as isize, 1],
            1.0,
            parallel,
        );
        let out_b = &mut out[b * d.c_out * out_plane..(b + 1) * d.c_out * out_plane];
        compact(&wide, out_b, [oh, ow], wp);
    }
    out
}

/// The input gradient through one product and a scatter: `cols = W^T grad`, `[c_in * kh * kw,
/// h' * w']` (the weight read transposed as stored), then each input pixel sums the entries of
/// the taps that read it (col2im), tap after tap.
///
/// # Shapes
/// `grad` `[batch, c_out, h', w']` -> `[batch, c_in, h, w]`.
pub fn input_grad_col2im(grad: &[f32], weight: &[f32], d: Dims) -> Vec<f32> {
    let [oh, ow] = d.out_hw();
    check(&d, d.batch * d.c_in * d.h * d.w, weight.len());
    assert_eq!(
        grad.len(),
        d.batch * d.c_out * oh * ow,
        "conv input gradient: grad shape"
    );
    let taps = d.kh * d.kw;
    let rows = d.c_in * taps;
    let (plane, out_plane) = (d.h * d.w, oh * ow);
    let mut cols = vec![0f32; rows * out_plane];
    let mut out = vec![0f32; d.batch * d.c_in * plane];
    let parallel = rows * out_plane * d.c_out >= PARALLEL_WORK;
    for b in 0..d.batch {
        matmul(
            [rows, out_plane, d.c_out],
            &mut cols,
            [out_plane as isize, 1],
            false,
            weight,
            [1, rows as isize],
            &grad[b * d.c_out * out_plane..(b + 1) * d.c_out * out_plane],
            [out_plane as isize, 1],
            1.0,
            parallel,
        );
        let out_b = &mut out[b * d.c_in * plane..(b + 1) * d.c_in * plane];
        out_b
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(c, dst)| {
                for t in 0..taps {
                    let (i, j) = (t / d.kw, t % d.kw);
                    let col = &cols[(c * taps + t) * out_plane..(c * taps + t + 1) * out_plane];
                    // Input pixel (y, x) reads output pixel (y + ph - i, x + pw - j).
                    for y in 0..d.h {
                        let Some(oy) = (y + d.ph).checked_sub(i).filter(|&oy| oy < oh) else {
                            continue;
                        };
                        let x0 = j.saturating_sub(d.pw);
                        let x1 = (ow + j).saturating_sub(d.pw).min(d.w);
                        if x0 >= x1 {
                            continue;
                        }
                        let src = &col[oy * ow + x0 + d.pw - j..oy * ow + x1 + d.pw - j];
                        for (o, s) in dst[y * d.w + x0..y * d.w + x1].iter_mut().zip(src) {
                            *o += *s;
                        }
                    }
                }
            });
    }
    out
}

/// Drops the discarded columns of a wide grid: `wide` holds each of `out`'s rows of `[oh, ow]`
/// pixels as `oh` runs `wp` apart (the last run without its tail), `out` receives them packed.
///
/// # Shapes
/// `wide`: `[rows, (oh - 1) * wp + ow]` -> `out`: `[rows, oh, ow]`.
fn compact(wide: &[f32], out: &mut [f32], [oh, ow]: [usize; 2], wp: usize) {
    let n = (oh - 1) * wp + ow;
    out.par_chunks_mut(ow).enumerate().for_each(|(row, dst)| {
        let (r, y) = (row / oh, row % oh);
        let start = r * n + y * wp;
        dst.copy_from_slice(&wide[start..start + ow]);
    });
}

/// Copies `src` `[channels, h, w]` into the zeroed interior of `dst` `[channels, h + 2 ph,
/// w + 2 pw]` (its border stays zero: it is only ever written here, always at the same places).
pub(super) fn pad(src: &[f32], dst: &mut [f32], [h, w]: [usize; 2], [ph, pw]: [usize; 2]) {
    let wp = w + 2 * pw;
    let padded_plane = (h + 2 * ph) * wp;
    dst.par_chunks_mut(padded_plane)
        .zip(src.par_chunks(h * w))
        .for_each(|(dst, src)| {
            for (y, row) in src.chunks_exact(w).enumerate() {
                let start = (y + ph) * wp + pw;
                dst[start..start + w].copy_from_slice(row);
            }
        });
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) from a small linear congruential generator.
    pub(in super::super) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every (input, weight, output) index triple of the convolution's definition: the taps
    /// that land inside the unpadded input.
    pub(in super::super) fn taps(d: Dims) -> Vec<[usize; 3]> {
        let [oh, ow] = d.out_hw();
        let mut out = Vec::new();
        for b in 0..d.batch {
            for o in 0..d.c_out {
                for y in 0..oh {
                    for xx in 0..ow {
                        for c in 0..d.c_in {
                            for i in 0..d.kh {
                                for j in 0..d.kw {
                                    let (sy, sx) = (y + i, xx + j);
                                    if sy < d.ph || sx < d.pw {
                                        continue;
                                    }
                                    let (sy, sx) = (sy - d.ph, sx - d.pw);
                                    if sy >= d.h || sx >= d.w {
                                        continue;
                                    }
                                    out.push([
                                        ((b * d.c_in + c) * d.h + sy) * d.w + sx,
                                        ((o * d.c_in + c) * d.kh + i) * d.kw + j,
                                        ((b * d.c_out + o) * oh + y) * ow + xx,
                                    ]);
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The convolution by its definition, in f64.
    fn naive_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, d: Dims) -> Vec<f64> {
        let [oh, ow] = d.out_hw();
        let plane = oh * ow;
        let mut out: Vec<f64> = (0..d.batch * d.c_out * plane)
            .map(|k| bias.map_or(0.0, |bias| bias[(k / plane) % d.c_out] as f64))
            .collect();
        for [xi, wi, oi] in taps(d) {
            out[oi] += x[xi] as f64 * w[wi] as f64;
        }
        out
    }

    /// The input gradient by its definition (each input element collects every output it
    /// contributed to), in f64.
    fn naive_input_grad(g: &[f32], w: &[f32], d: Dims) -> Vec<f64> {
        let mut out = vec![0f64; d.batch * d.c_in * d.h * d.w];
        for [xi, wi, oi] in taps(d) {
            out[xi] += g[oi] as f64 * w[wi] as f64;
        }
        out
    }

    /// Largest difference relative to the largest reference magnitude.
    pub(in super::super) fn relative_error(got: &[f32], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want)
            .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
        worst / scale
    }

    pub(in super::super) fn shapes() -> Vec<Dims> {
        let d = |batch, c_in, h, w, c_out, kh, kw, ph, pw| Dims {
            batch,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            ph,
            pw,
        };
        vec![
            d(1, 3, 5, 6, 4, 3, 3, 1, 1), // the UNet's "same" 3x3
            d(2, 5, 7, 4, 3, 3, 3, 1, 1), // batch 2, narrow
            d(1, 4, 6, 6, 5, 3, 3, 0, 0), // valid 3x3 (the VAE's padded downsampler shape)
            d(2, 6, 4, 5, 7, 1, 1, 0, 0), // 1x1 (shortcuts, the VAE's quant convs)
            d(1, 3, 6, 7, 2, 2, 3, 1, 2), // rectangular kernel, pads up to k - 1
            d(1, 2, 1, 1, 3, 3, 3, 1, 1), // a single pixel
            d(1, 4, 3, 9, 2, 3, 1, 2, 0), // a column kernel
        ]
    }

    type ForwardFn = fn(&[f32], &[f32], Option<&[f32]>, Dims) -> Vec<f32>;
    type InputGradFn = fn(&[f32], &[f32], Dims) -> Vec<f32>;
    const FORWARDS: [(&str, ForwardFn); 3] = [
        ("shifted", forward_shifted),
        ("im2col", forward_im2col),
        ("picked", forward),
    ];
    const INPUT_GRADS: [(&str, InputGradFn); 3] = [
        ("shifted", input_grad_shifted),
        ("col2im", input_grad_col2im),
        ("picked", input_grad),
    ];

    // Tolerances: f32 sums of at most a few hundred products of values in [-1, 1] against the
    // f64 definition, relative to the output's largest magnitude: a few ulp (6e-8 each) times
    // the square root of the terms' count stays far below 1e-6.
    pub(in super::super) const TOLERANCE: f64 = 1e-6;

    #[test]
    fn forward_matches_the_definition() {
        for (n, d) in shapes().into_iter().enumerate() {
            let x = values(d.batch * d.c_in * d.h * d.w, n as u64);
            let w = values(d.c_out * d.c_in * d.kh * d.kw, 100 + n as u64);
            let bias = values(d.c_out, 200 + n as u64);
            for bias in [None, Some(&bias[..])] {
                let want = naive_forward(&x, &w, bias, d);
                for (path, f) in FORWARDS {
                    let err = relative_error(&f(&x, &w, bias, d), &want);
                    assert!(
                        err < TOLERANCE,
                        "{path} {d:?}, bias {}: {err}",
                        bias.is_some()
                    );
                }
            }
        }
    }

    #[test]
    fn input_grad_matches_the_definition_and_is_the_adjoint() {
        for (n, d) in shapes().into_iter().enumerate() {
            let [oh, ow] = d.out_hw();
            let g = values(d.batch * d.c_out * oh * ow, 300 + n as u64);
            let w = values(d.c_out * d.c_in * d.kh * d.kw, 400 + n as u64);
            let want = naive_input_grad(&g, &w, d);
            for (path, f) in INPUT_GRADS {
                let err = relative_error(&f(&g, &w, d), &want);
                assert!(err < TOLERANCE, "{path} {d:?}: {err}");
            }
            let got = input_grad(&g, &w, d);
            // <conv(x), g> = <x, input_grad(g)> (no bias): the two are each other's adjoint.
            let x = values(d.batch * d.c_in * d.h * d.w, 500 + n as u64);
            let y = forward(&x, &w, None, d);
            let (lhs, rhs) = (dot(&y, &g), dot(&x, &got));
            assert!(
                (lhs - rhs).abs() <= 1e-5 * lhs.abs().max(1.0),
                "{d:?}: {lhs} vs {rhs}"
            );
        }
    }

    /// A 3x3 shape large enough for the products to run in parallel (`PARALLEL_WORK`: the
    /// wide grid's pixels times both channel counts).
    pub(in super::super) fn parallel_shape() -> Dims {
        let d = Dims {
            batch: 2,
            c_in: 96,
            h: 24,
            w: 30,
            c_out: 112,
            kh: 3,
            kw: 3,
            ph: 1,
            pw: 1,
        };
        let [oh, ow] = d.out_hw();
        assert!(d.c_out * ((oh - 1) * (d.w + 2 * d.pw) + ow) * d.c_in >= PARALLEL_WORK);
        d
    }

    /// `<a, b>` in f64 (the adjoint checks).
    pub(in super::super) fn dot(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let d = parallel_shape();
        let [oh, ow] = d.out_hw();
        let x = values(d.batch * d.c_in * d.h * d.w, 1);
        let w = values(d.c_out * d.c_in * 9, 2);
        let bias = values(d.c_out, 3);
        let g = values(d.batch * d.c_out * oh * ow, 4);
        let run = |threads| {
            super::super::in_pool(threads, || {
                let forwards = FORWARDS.map(|(_, f)| f(&x, &w, Some(&bias), d));
                let grads = INPUT_GRADS.map(|(_, f)| f(&g, &w, d));
                (forwards, grads)
            })
        };
        let one = run(1);
        for threads in [2, 3, 8] {
            assert!(one == run(threads), "{threads} threads differ from one");
        }
        let err = relative_error(&one.0[0], &naive_forward(&x, &w, Some(&bias), d));
        assert!(err < TOLERANCE, "{err}");
    }

    #[test]
    fn unsupported_shapes_are_refused() {
        let d = Dims {
            batch: 1,
            c_in: 1,
            h: 4,
            w: 4,
            c_out: 1,
            kh: 3,
            kw: 3,
            ph: 3,
            pw: 1,
        };
        assert!(!d.supported(), "padding must stay below the kernel's side");
        assert!(!Dims { h: 1, ph: 0, ..d }.supported(), "an empty output");
        assert!(Dims { ph: 2, ..d }.supported());
    }
}
