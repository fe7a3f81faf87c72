//! GEGLU (`a * gelu(gate)` of the two halves of one projection, as diffusers' feed-forward) from
//! Burn's tensor ops: the default of [`SdBackend::sd_geglu`](super::SdBackend::sd_geglu) and of
//! its backward.
//!
//! As one autodiff node ([`super::autodiff`]) it keeps only the projection `h`; Burn's chain of
//! `chunk`, `gelu` and `mul` keeps `h` (the halves are views of it) and `gelu(gate)` too, a
//! `[B, N, 4C]` tensor per transformer block.

use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

/// The halves `(a, gate)` of `h` along its last axis.
fn halves<B: Backend>(h: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [_, _, two_i] = h.dims();
    assert!(
        two_i.is_multiple_of(2),
        "GEGLU: the last axis ({two_i}) must split in two halves"
    );
    let i = two_i / 2;
    (h.clone().narrow(2, 0, i), h.narrow(2, i, i))
}

/// `a * gelu(gate)` with `(a, gate)` the halves of `h`'s last axis.
///
/// # Shapes
/// `[B, N, 2I]` -> `[B, N, I]`.
pub fn forward<B: Backend>(h: Tensor<B, 3>) -> Tensor<B, 3> {
    let (a, gate) = halves(h);
    a * gelu(gate)
}

/// The gradient of [`forward`]'s input given the gradient of its output, computed as Burn's
/// autodiff computes it through `chunk`, `gelu` and `mul`: `da = grad * gelu(gate)`,
/// `dgate = gelu_backward(gate, grad * a)`, concatenated.
///
/// # Shapes
/// `h`: `[B, N, 2I]`, `grad`: `[B, N, I]` -> `[B, N, 2I]`.
pub fn backward<B: Backend>(h: Tensor<B, 3>, grad: Tensor<B, 3>) -> Tensor<B, 3> {
    let (a, gate) = halves(h);
    let da = grad.clone() * gelu(gate.clone());
    let d_gelu = grad * a;
    let dgate = B::gelu_backward(
        gate.into_primitive().tensor(),
        d_gelu.into_primitive().tensor(),
    );
    Tensor::cat(
        vec![da, Tensor::from_primitive(TensorPrimitive::Float(dgate))],
        2,
    )
}
