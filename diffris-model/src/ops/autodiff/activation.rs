//! Activations as graph nodes that keep less than Burn's.
//!
//! - SiLU keeps only its input. Burn differentiates `silu` as `mul(x, sigmoid(x))`, which keeps
//!   `x` and `sigmoid(x)`. The backward here recomputes `sigmoid(x)` and applies the same two
//!   gradient terms with the same operations Burn's `mul` and `sigmoid` backward use
//!   (`grad * s` and `sigmoid_backward(s, grad * x)`, summed), so the gradient is Burn's, bit
//!   for bit.
//! - ReLU keeps its output, which the following layer holds anyway; Burn's keeps the input.
//!   `relu_backward` zeroes the gradient where its argument is <= 0, and `relu(x) <= 0` exactly
//!   where `x <= 0`, so the gradient is Burn's, bit for bit.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;

use crate::ops::SdBackend;

#[derive(Debug)]
struct Silu;

impl<B: SdBackend> Backward<B, 1> for Silu {
    /// The input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let x = ops.state;
            let s = B::sigmoid(x.clone());
            let through_sigmoid = B::sigmoid_backward(s.clone(), B::float_mul(grad.clone(), x));
            let direct = B::float_mul(grad, s);
            grads.register::<B>(node.id, B::float_add(through_sigmoid, direct));
        }
    }
}

/// [`SdBackend::sd_silu`] on `Autodiff<B, C>`.
pub(super) fn sd_silu<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let forward = |x: FloatTensor<B>| B::float_mul(x.clone(), B::sigmoid(x));
    // Marked compute-bound: the state is kept as is rather than recomputed by a checkpointing
    // strategy (which would need a retro-forward).
    match Silu
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(x.primitive.clone(), forward(x.primitive)),
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    }
}

#[derive(Debug)]
struct Relu;

impl<B: SdBackend> Backward<B, 1> for Relu {
    /// The output.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::relu_backward(ops.state, grad));
        }
    }
}

/// [`SdBackend::sd_relu`] on `Autodiff<B, C>`.
pub(super) fn sd_relu<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    match Relu
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = B::relu(x.primitive);
            prep.finish(out.clone(), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::relu(x.primitive)),
    }
}
