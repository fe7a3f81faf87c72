//! The swap of a `[B, M, N]` tensor's last two axes as one node over the inner backend's
//! [`SdBackend::sd_transpose`], so the gradient is swapped back by the same operation (Burn's
//! `swap_dims` backward gives a strided view, which flex copies on one thread wherever it next
//! needs contiguous memory).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::ops::FloatTensor;

use crate::ops::SdBackend;

#[derive(Debug)]
struct Transpose;

impl<B: SdBackend> Backward<B, 1> for Transpose {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::sd_transpose(grad));
        }
    }
}

/// [`SdBackend::sd_transpose`] on `Autodiff<B, C>`.
pub(super) fn sd_transpose<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let out = B::sd_transpose(x.primitive);
    Transpose
        .prepare::<C>([x.node])
        .compute_bound()
        .stateless(out)
}
