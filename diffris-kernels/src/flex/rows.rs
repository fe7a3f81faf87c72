//! The row operations of the CPU attention kernel's softmax, in SIMD code: a vectorisable
//! `exp`, row max, sum, division and the backward's `E * (dP - delta)`.
//!
//! The C library's `expf` (what `f32::exp` calls) is one scalar call per element; the softmax of
//! SD-1.5's 64x64 level takes 134 million of them per attention layer and direction. This one is
//! branch-free arithmetic that the compiler turns into SIMD code:
//!
//! `exp(x) = 2^n * exp(r)` with `n = round(x / ln 2)` and `r = x - n ln 2` (`ln 2` split in a
//! high part exact in f32 and a low correction, so `r` is exact to f32 rounding), and `exp(r)` on
//! `|r| <= ln(2) / 2` from the degree-7 polynomial `1 + r + r^2 (c2 + c3 r + ... + c7 r^5)`
//! (the minimax coefficients of the Cephes library's `expf`). Relative error at most 2.5e-7
//! (about 2 ulp; the unit test measures it against `f64::exp`).
//!
//! Inputs are clamped to `[-87.33, 88.3]`: below, `exp` would leave f32's normal range (the
//! result stays the smallest values near 1.2e-38 instead of flushing to 0, far below anything a
//! softmax sum notices); the attention only calls it on `score - row max <= 0`. NaN stays NaN.
//!
//! The element loops are compiled three times (AVX-512, AVX2 + FMA, baseline) and picked at run
//! time; without fused multiply-adds in the source (Rust does not contract `a * b + c`) all three
//! give the same bits.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` = `LN2_HI + LN2_LO`; `LN2_HI` has few mantissa bits, so `n * LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const MIN_X: f32 = -87.336_55;
const MAX_X: f32 = 88.3;
/// Cephes `expf` polynomial: `exp(r) ~ 1 + r + r^2 (P5 + r (P4 + r (P3 + r (P2 + r (P1 + r P0)))))`.
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_199_9e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
/// Cephes' 5.0000001201e-1 rounds to 0.5 in f32.
const P5: f32 = 0.5;

/// 1.5 * 2^23: adding it to a float of magnitude below 2^22 rounds it to an integer (ties to
/// even) held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;
const ROUND_BITS: u32 = 0x4B40_0000;

/// SIMD width the loops are written for (16 f32 lanes: one AVX-512 register).
const LANES: usize = 16;

/// `exp(x)` (see the module documentation for range and accuracy).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(MIN_X, MAX_X);
    // `x * LOG2_E + ROUND` rounds the product to the nearest integer, ties to even (what
    // `round_ties_even` does), and leaves that integer in the low mantissa bits: `2^n` comes
    // from integer arithmetic on the bits, which vectorises (a saturating `n as i32` does not:
    // the compiler emits one scalar conversion per lane).
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI;
    let r = r - n * LN2_LO;
    let p = P0 * r + P1;
    let p = p * r + P2;
    let p = p * r + P3;
    let p = p * r + P4;
    let p = p * r + P5;
    let p = p * (r * r) + r + 1.0;
    // n is in [-126, 127] after the clamp (a normal power of two): the bits of t are
    // ROUND's plus n, so the biased exponent n + 127 is those bits minus ROUND's plus 127.
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(ROUND_BITS - 127) << 23);
    p * two_n
}

#[inline(always)]
fn exp_shift_sum_impl(row: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (x, a) in chunk.iter_mut().zip(acc.iter_mut()) {
            let e = exp(*x - shift);
            *x = e;
            *a += e;
        }
    }
    for (x, a) in chunks.into_remainder().iter_mut().zip(acc.iter_mut()) {
        let e = exp(*x - shift);
        *x = e;
        *a += e;
    }
    // Pairwise reduction of the lanes: a fixed order.
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

#[inline(always)]
fn max_impl(row: &[f32]) -> f32 {
    let mut acc = [f32::MIN; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (x, a) in chunk.iter().zip(acc.iter_mut()) {
            *a = if *x > *a { *x } else { *a };
        }
    }
    for (x, a) in chunks.remainder().iter().zip(acc.iter_mut()) {
        *a = if *x > *a { *x } else { *a };
    }
    acc.into_iter()
        .fold(f32::MIN, |m, a| if a > m { a } else { m })
}

#[inline(always)]
fn divide_impl(row: &mut [f32], divisor: f32) {
    for x in row.iter_mut() {
        *x /= divisor;
    }
}

#[inline(always)]
fn mul_shifted_impl(row: &mut [f32], other: &[f32], shift: f32) {
    for (x, y) in row.iter_mut().zip(other) {
        *x *= *y - shift;
    }
}

#[inline(always)]
fn exp_shift_impl(row: &mut [f32], shift: f32) {
    for x in row.iter_mut() {
        *x = exp(*x - shift);
    }
}

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident, $imp:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) -> $ret {
                    $imp($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}

dispatch!(
    /// `row[i] = exp(row[i] - shift)` for every element; returns the sum of the new values,
    /// accumulated in 16 lanes and reduced pairwise (a fixed order).
    exp_shift_sum, exp_shift_sum_impl, (row: &mut [f32], shift: f32) -> f32
);

dispatch!(
    /// `row[i] = exp(row[i] - shift)` for every element.
    exp_shift, exp_shift_impl, (row: &mut [f32], shift: f32) -> ()
);

dispatch!(
    /// The largest element, at least f32's lowest finite value (a NaN is skipped: it reaches
    /// the result through the exponentials instead).
    max, max_impl, (row: &[f32]) -> f32
);

dispatch!(
    /// `row[i] /= divisor` for every element.
    divide, divide_impl, (row: &mut [f32], divisor: f32) -> ()
);

dispatch!(
    /// `row[i] *= other[i] - shift` for every element (`row` and `other` of one length).
    mul_shifted, mul_shifted_impl, (row: &mut [f32], other: &[f32], shift: f32) -> ()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_three_ulp_of_f64() {
        // Every 997th f32 bit pattern in [-87, 88] plus the ends and zero.
        let mut worst = 0f64;
        let mut xs = vec![0.0f32, -0.0, MIN_X, MAX_X, 1.0, -1.0];
        let mut bits = 0u32;
        while bits < u32::MAX - 997 {
            let x = f32::from_bits(bits);
            if x.is_finite() && (MIN_X..=MAX_X).contains(&x) {
                xs.push(x);
            }
            bits += 997;
        }
        for x in xs {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        // f32 has 2^-24 = 6e-8 relative spacing: 2.5e-7 is about 4 half-ulps.
        assert!(worst < 2.5e-7, "worst relative error {worst}");
    }

    #[test]
    fn exp_rounds_like_round_ties_even() {
        // The integer-rounding trick must give the same bits as the direct formula
        // (`round_ties_even` and a conversion to i32), over every 997th pattern of the
        // clamped range plus the exact ties of x * LOG2_E that rounding could split.
        fn direct(x: f32) -> f32 {
            let x = x.clamp(MIN_X, MAX_X);
            let n = (x * LOG2_E).round_ties_even();
            let r = x - n * LN2_HI;
            let r = r - n * LN2_LO;
            let p = P0 * r + P1;
            let p = p * r + P2;
            let p = p * r + P3;
            let p = p * r + P4;
            let p = p * r + P5;
            let p = p * (r * r) + r + 1.0;
            p * f32::from_bits(((n as i32 + 127) as u32) << 23)
        }
        assert_eq!(ROUND.to_bits(), ROUND_BITS);
        let mut bits = 0u32;
        let mut checked = 0;
        while bits < u32::MAX - 997 {
            let x = f32::from_bits(bits);
            if x.is_finite() && (MIN_X..=MAX_X).contains(&x) {
                assert_eq!(exp(x).to_bits(), direct(x).to_bits(), "x = {x}");
                checked += 1;
            }
            bits += 997;
        }
        assert!(checked > 1_000_000);
        for k in -130..130 {
            // x whose product with LOG2_E lands on (or next to) k + 0.5.
            let x = (k as f32 + 0.5) / LOG2_E;
            for x in [x, x.next_up(), x.next_down()] {
                assert_eq!(exp(x).to_bits(), direct(x).to_bits(), "x = {x}");
            }
        }
    }

    #[test]
    fn exp_keeps_nan_and_clamps_the_ends() {
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), exp(MIN_X));
        assert!(exp(f32::NEG_INFINITY) > 0.0 && exp(f32::NEG_INFINITY) < 1.3e-38);
        assert!(exp(f32::INFINITY).is_finite());
    }

    #[test]
    fn every_simd_path_gives_the_scalar_bits() {
        let row: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.37).sin() * 30.0 - 5.0)
            .collect();
        let shift = 3.25;
        let mut fast = row.clone();
        let sum = exp_shift_sum(&mut fast, shift);
        let mut plain = row.clone();
        let plain_sum = exp_shift_sum_impl(&mut plain, shift);
        assert_eq!(fast, plain);
        assert_eq!(sum.to_bits(), plain_sum.to_bits());
        let mut shifted = row.clone();
        exp_shift(&mut shifted, shift);
        assert_eq!(shifted, plain);
        // The sum is the sum of the values (16 lanes reorder the additions: ~1e-7 relative).
        let direct: f64 = plain.iter().map(|&x| x as f64).sum();
        assert!(((sum as f64) - direct).abs() / direct < 1e-6);
        let want = row.iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(max(&row), want);
        assert_eq!(max(&[]), f32::MIN);
        let mut divided = row.clone();
        divide(&mut divided, 3.0);
        assert!(divided.iter().zip(&row).all(|(a, b)| *a == *b / 3.0));
        let mut product = row.clone();
        mul_shifted(&mut product, &plain, 0.5);
        assert!(
            product
                .iter()
                .zip(row.iter().zip(&plain))
                .all(|(p, (a, b))| *p == *a * (*b - 0.5))
        );
    }
}
