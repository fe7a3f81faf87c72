//! SiLU on f32 slices in parallel chunks, with exactly the element formulas of Burn's flex
//! (`sigmoid`: `1 / (1 + exp(-x))` for `x >= 0`, `e / (1 + e)` with `e = exp(x)` below;
//! `sigmoid_backward(s, g)`: `g * s * (1 - s)`; products and sums as written), so the results
//! are flex's composed ones bit for bit. Flex runs each of those five element loops on one
//! thread.

use rayon::prelude::*;

/// Elements per rayon task at least.
const MIN_LEN: usize = 1 << 14;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `x * sigmoid(x)` per element.
pub fn forward(x: &[f32]) -> Vec<f32> {
    x.par_iter()
        .with_min_len(MIN_LEN)
        .map(|&x| x * sigmoid(x))
        .collect()
}

/// `sigmoid_backward(s, grad * x) + grad * s` per element, `s = sigmoid(x)`.
pub fn backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        grad.len(),
        "SiLU backward: x and grad differ in size"
    );
    x.par_iter()
        .zip(grad.par_iter())
        .with_min_len(MIN_LEN)
        .map(|(&x, &g)| {
            let s = sigmoid(x);
            let through_sigmoid = (g * x) * s * (1.0 - s);
            let direct = g * s;
            through_sigmoid + direct
        })
        .collect()
}
