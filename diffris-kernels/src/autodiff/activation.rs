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
//! - GEGLU keeps only the projection `h`; Burn's `chunk`, `gelu`, `mul` keep `gelu(gate)` too.
//!   The backward is the inner backend's [`SdBackend::sd_geglu_backward`], Burn's arithmetic.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;

use crate::SdBackend;

use super::{primitive, tensor};

#[derive(Debug)]
struct Silu;

impl<B: SdBackend> Backward<B, 1> for Silu {
    /// The input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::sd_silu_backward(ops.state, grad));
        }
    }
}

/// [`SdBackend::sd_silu`] on `Autodiff<B, C>`.
pub(super) fn sd_silu<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let forward = |x: FloatTensor<B>| B::sd_silu(x);
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

#[derive(Debug)]
struct Geglu;

impl<B: SdBackend> Backward<B, 1> for Geglu {
    /// The projection `h`.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_h] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_h {
            let dh = B::sd_geglu_backward(tensor::<B, 3>(ops.state), tensor::<B, 3>(grad));
            grads.register::<B>(node.id, primitive(dh));
        }
    }
}

/// [`SdBackend::sd_geglu`] on `Autodiff<B, C>`.
pub(super) fn sd_geglu<B: SdBackend, C: CheckpointStrategy>(
    h: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let forward = |h: FloatTensor<B>| primitive(B::sd_geglu(tensor::<B, 3>(h)));
    match Geglu
        .prepare::<C>([h.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(h.primitive.clone(), forward(h.primitive)),
        OpsKind::UnTracked(prep) => prep.finish(forward(h.primitive)),
    }
}
