//! The swap of a `[B, M, N]` tensor's last two axes as one node over the inner backend's
//! [`SdBackend::sd_transpose`], so the gradient is swapped back by the same operation (Burn's
//! `swap_dims` backward gives a strided view, which flex copies on one thread wherever it next
//! needs contiguous memory); and `swap_dims` and `permute` as nodes over the inner backend's
//! [`SdBackend::sd_swap_dims`] and [`SdBackend::sd_permute`], forward and backward (Burn's
//! nodes call the inner backend's `float_swap_dims` and `float_permute`, which libtorch gets
//! wrong: see `sd_swap_dims`). The backward of a swap is the same swap, of a permutation the
//! inverse permutation, as in Burn's nodes.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;

use crate::SdBackend;

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

#[derive(Debug)]
struct SwapDims;

impl<B: SdBackend> Backward<B, 1> for SwapDims {
    type State = (usize, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let (dim1, dim2) = ops.state;
            grads.register::<B>(node.id, B::sd_swap_dims(grad, dim2, dim1));
        }
    }
}

/// [`SdBackend::sd_swap_dims`] on `Autodiff<B, C>`.
pub(super) fn sd_swap_dims<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    dim1: usize,
    dim2: usize,
) -> FloatTensor<Autodiff<B, C>> {
    let out = B::sd_swap_dims(x.primitive, dim1, dim2);
    match SwapDims.prepare::<C>([x.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((dim1, dim2), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

#[derive(Debug)]
struct Permute;

impl<B: SdBackend> Backward<B, 1> for Permute {
    /// The forward's axes.
    type State = Vec<usize>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let mut inverse = vec![0; ops.state.len()];
            for (i, &a) in ops.state.iter().enumerate() {
                inverse[a] = i;
            }
            grads.register::<B>(node.id, B::sd_permute(grad, &inverse));
        }
    }
}

/// [`SdBackend::sd_permute`] on `Autodiff<B, C>`.
pub(super) fn sd_permute<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    axes: &[usize],
) -> FloatTensor<Autodiff<B, C>> {
    let out = B::sd_permute(x.primitive, axes);
    match Permute.prepare::<C>([x.node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(axes.to_vec(), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
