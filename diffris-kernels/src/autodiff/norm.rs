//! A group or layer normalisation whose `gamma` and `beta` take no gradient, as one node over the
//! inner backend's kernel ([`SdBackend::sd_norm_forward`]): it keeps the input and two numbers
//! per row, and its backward is [`SdBackend::sd_norm_backward`]. Burn's composition keeps the
//! centred input instead and takes a dozen element passes each way.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::ops::FloatTensor;

use crate::SdBackend;
use crate::norm::Rows;

#[derive(Debug)]
struct FrozenNorm;

/// The input, its row statistics `[mean, std]`, `gamma` and the layout.
#[derive(Debug, Clone)]
struct Saved<B: SdBackend> {
    x: FloatTensor<B>,
    stats: [FloatTensor<B>; 2],
    gamma: Option<FloatTensor<B>>,
    rows: Rows,
}

impl<B: SdBackend> Backward<B, 1> for FrozenNorm {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let Saved {
                x,
                stats,
                gamma,
                rows,
            } = ops.state;
            grads.register::<B>(node.id, B::sd_norm_backward(x, stats, gamma, rows, grad));
        }
    }
}

/// [`SdBackend::sd_norm`] on `Autodiff<B, C>`: `None` for tracked parameters or where the
/// inner backend has no kernel.
pub(super) fn sd_norm<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: Option<FloatTensor<Autodiff<B, C>>>,
    beta: Option<FloatTensor<Autodiff<B, C>>>,
    rows: Rows,
    eps: f64,
) -> Option<FloatTensor<Autodiff<B, C>>> {
    if [&gamma, &beta]
        .into_iter()
        .flatten()
        .any(|p| p.is_tracked())
    {
        return None;
    }
    let gamma = gamma.map(|g| g.primitive);
    let (out, stats) = B::sd_norm_forward(
        x.primitive.clone(),
        gamma.clone(),
        beta.map(|b| b.primitive),
        rows,
        eps,
    )?;
    let node = x.node.clone();
    Some(
        match FrozenNorm.prepare::<C>([node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(
                Saved {
                    x: x.primitive,
                    stats,
                    gamma,
                    rows,
                },
                out,
            ),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    )
}
