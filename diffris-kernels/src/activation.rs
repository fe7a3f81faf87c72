//! The activation family: SiLU, GEGLU and ReLU, each keeping less for the backward pass than
//! Burn's composition under autodiff (SiLU and GEGLU their input only, ReLU its output).

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::geglu;

/// The activations of the SD stack and the decoders.
pub trait ActivationOps: Backend {
    /// `x * sigmoid(x)`; `Autodiff<B>` keeps only `x` for the backward pass.
    fn sd_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_composed::<Self>(x)
    }

    /// The gradient of [`sd_silu`](Self::sd_silu)'s input given its output's gradient, with
    /// the operations Burn's autodiff uses for `x * sigmoid(x)`: `sigmoid_backward(s, grad *
    /// x) + grad * s` with `s = sigmoid(x)`. Flex computes the same in parallel ([`crate::flex`]).
    ///
    /// # Shapes
    /// `x`, `grad`: any, the same -> the same.
    fn sd_silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_backward_composed::<Self>(x, grad)
    }

    /// GEGLU, `a * gelu(gate)` with `(a, gate)` the halves of `h`'s last axis (diffusers'
    /// feed-forward). `Autodiff<B>` keeps only `h` for the backward pass. The default is
    /// Burn's ops ([`crate::geglu::forward`]); flex runs it in parallel ([`crate::flex`]) with the same bits.
    ///
    /// # Shapes
    /// `[B, N, 2I]` -> `[B, N, I]`.
    fn sd_geglu(h: Tensor<Self, 3>) -> Tensor<Self, 3> {
        geglu::forward(h)
    }

    /// The gradient of [`sd_geglu`](Self::sd_geglu)'s input given its output's gradient; the
    /// default is [`crate::geglu::backward`] (Burn's autodiff arithmetic through `chunk`, `gelu` and
    /// `mul`).
    ///
    /// # Shapes
    /// `h`: `[B, N, 2I]`, `grad`: `[B, N, I]` -> `[B, N, 2I]`.
    fn sd_geglu_backward(h: Tensor<Self, 3>, grad: Tensor<Self, 3>) -> Tensor<Self, 3> {
        geglu::backward(h, grad)
    }

    /// `max(x, 0)`; `Autodiff<B>` keeps the output (not the input) for the backward pass.
    fn sd_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(x)
    }
}

/// `x * sigmoid(x)` from Burn's ops (the default of [`ActivationOps::sd_silu`]).
pub fn silu_composed<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(x.clone(), B::sigmoid(x))
}

/// SiLU's input gradient from Burn's ops, as its autodiff computes it through `mul` and
/// `sigmoid` (the default of [`ActivationOps::sd_silu_backward`]).
pub fn silu_backward_composed<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let s = B::sigmoid(x.clone());
    let through_sigmoid = B::sigmoid_backward(s.clone(), B::float_mul(grad.clone(), x));
    let direct = B::float_mul(grad, s);
    B::float_add(through_sigmoid, direct)
}

/// SiLU through [`ActivationOps::sd_silu`].
///
/// # Shapes
/// any -> the same.
pub fn sd_silu<B: ActivationOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::sd_silu(
        x.into_primitive().tensor(),
    )))
}

/// GEGLU through [`ActivationOps::sd_geglu`].
///
/// # Shapes
/// `[B, N, 2I]` -> `[B, N, I]`.
pub fn sd_geglu<B: ActivationOps>(h: Tensor<B, 3>) -> Tensor<B, 3> {
    B::sd_geglu(h)
}

/// ReLU through [`ActivationOps::sd_relu`].
///
/// # Shapes
/// any -> the same.
pub fn sd_relu<B: ActivationOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::sd_relu(
        x.into_primitive().tensor(),
    )))
}
