//! A linear layer whose weight (and bias) take no gradient: one graph node whose backward asks
//! the inner backend for the input's gradient ([`SdBackend::sd_linear_input_grad`]).
//!
//! Burn's autodiff `linear` already keeps only the weight when the weight is frozen; its input
//! gradient, `linear_x_backward`, multiplies by the weight transposed after reshaping the
//! transposed view to the gradient's rank, and on flex that reshape copies the whole weight,
//! element by element on one thread, in every backward pass (a fifth of a second per
//! SD-1.5 UNet backward on the development machine). With a tracked weight or bias, Burn's
//! `linear` runs unchanged.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::{FloatTensor, ModuleOps};

use crate::SdBackend;

#[derive(Debug)]
struct FrozenLinear;

impl<B: SdBackend> Backward<B, 1> for FrozenLinear {
    /// The weight (a parameter, held anyway).
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::sd_linear_input_grad(grad, ops.state));
        }
    }
}

/// [`SdBackend::sd_linear`] on `Autodiff<B, C>`.
pub(super) fn sd_linear<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
) -> FloatTensor<Autodiff<B, C>> {
    let frozen = !weight.is_tracked() && bias.as_ref().is_none_or(|b| !b.is_tracked());
    if !frozen {
        return <Autodiff<B, C> as ModuleOps<Autodiff<B, C>>>::linear(x, weight, bias);
    }
    let node = x.node.clone();
    let out = B::linear(
        x.primitive,
        weight.primitive.clone(),
        bias.map(|b| b.primitive),
    );
    match FrozenLinear.prepare::<C>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(weight.primitive, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
