//! The linear family: a frozen weight's layer as one node whose input gradient a backend may
//! compute its own way (flex: through a transposed view of the weight, not a copy).

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// The linear layers of the SD stack and the decoders.
pub trait LinearOps: Backend {
    /// Burn's `linear`, `x @ weight + bias`; `Autodiff<B>` makes a frozen weight's layer one
    /// node whose backward is [`sd_linear_input_grad`](Self::sd_linear_input_grad).
    ///
    /// # Shapes
    /// `x`: `[..., D_in]` (rank 2 or more), `weight`: `[D_in, D_out]`, `bias`: `[D_out]` ->
    /// `[..., D_out]`.
    fn sd_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        Self::linear(x, weight, bias)
    }

    /// The gradient of [`sd_linear`](Self::sd_linear)'s input, `grad @ weight^T`. The default
    /// is Burn's `linear_x_backward`; flex multiplies by the transposed weight as a strided
    /// view instead of copying it.
    ///
    /// # Shapes
    /// `grad`: `[..., D_out]`, `weight`: `[D_in, D_out]` -> `[..., D_in]`.
    fn sd_linear_input_grad(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear_x_backward(weight, grad)
    }
}

/// `linear.forward(x)` through [`LinearOps::sd_linear`].
///
/// # Shapes
/// `[..., D_in]` -> `[..., D_out]` (rank 2 or more).
pub fn sd_linear<B: LinearOps, const D: usize>(
    linear: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    assert!(D >= 2, "sd_linear: the input needs a batch axis");
    let out = B::sd_linear(
        x.into_primitive().tensor(),
        linear.weight.val().into_primitive().tensor(),
        linear
            .bias
            .as_ref()
            .map(|b| b.val().into_primitive().tensor()),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
