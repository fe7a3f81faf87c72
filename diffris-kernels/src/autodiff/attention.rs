//! Attention as one autodiff graph node with its own backward.
//!
//! The forward is the inner backend's [`SdBackend::sd_attention_forward`] (query blocks). When
//! none of `q`, `k`, `v` is tracked the node is untracked and keeps nothing; otherwise it keeps
//! `q`, `k`, `v`, the output and the row statistics; the backward
//! ([`SdBackend::sd_attention_backward`]) recomputes the probabilities one block at a time and
//! computes only the gradients of the tracked inputs.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;

use crate::SdBackend;
use crate::attention::{RowStats, Wanted};

/// What the backward of one attention node keeps: inputs, output and row statistics.
#[derive(Debug, Clone)]
struct SavedAttention<B: SdBackend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    rows: usize,
    /// Per query block: row max and row sum of exponentials.
    stats: Vec<(FloatTensor<B>, FloatTensor<B>)>,
}

#[derive(Debug)]
struct MemoryEfficientAttention;

use super::{primitive, tensor};

impl<B: SdBackend> Backward<B, 3> for MemoryEfficientAttention {
    type State = SavedAttention<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad_out = tensor::<B, 4>(grads.consume::<B>(&ops.node));
        let saved = ops.state;
        let wanted = Wanted {
            q: node_q.is_some(),
            k: node_k.is_some(),
            v: node_v.is_some(),
        };
        let stats = RowStats {
            rows: saved.rows,
            blocks: (saved.stats.into_iter())
                .map(|(max, sum)| (tensor::<B, 4>(max), tensor::<B, 4>(sum)))
                .collect(),
        };
        let inputs = [saved.q, saved.k, saved.v].map(tensor::<B, 4>);
        let grads_in =
            B::sd_attention_backward(inputs, tensor::<B, 4>(saved.out), stats, grad_out, wanted);
        for (node, grad) in [
            (node_q, grads_in.q),
            (node_k, grads_in.k),
            (node_v, grads_in.v),
        ] {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<B>(node.id, primitive(grad));
            }
        }
    }
}

/// [`SdBackend::sd_attention`] on `Autodiff<B, C>`.
pub(super) fn sd_attention<B: SdBackend, C: CheckpointStrategy>(
    q: FloatTensor<Autodiff<B, C>>,
    k: FloatTensor<Autodiff<B, C>>,
    v: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    {
        match MemoryEfficientAttention
            .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, stats) = B::sd_attention_forward(
                    tensor::<B, 4>(q.primitive.clone()),
                    tensor::<B, 4>(k.primitive.clone()),
                    tensor::<B, 4>(v.primitive.clone()),
                );
                let out = primitive(out);
                let saved = SavedAttention {
                    q: q.primitive,
                    k: k.primitive,
                    v: v.primitive,
                    out: out.clone(),
                    rows: stats.rows,
                    stats: (stats.blocks.into_iter())
                        .map(|(max, sum)| (primitive(max), primitive(sum)))
                        .collect(),
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => {
                // The same blocked computation, so that a training forward gives the same numbers
                // whether or not a layer's inputs are tracked.
                let (out, _) = B::sd_attention_forward(
                    tensor::<B, 4>(q.primitive),
                    tensor::<B, 4>(k.primitive),
                    tensor::<B, 4>(v.primitive),
                );
                prep.finish(primitive(out))
            }
        }
    }
}
