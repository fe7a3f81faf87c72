//! A 2-D convolution whose weight (and bias) take no gradient keeps only the input's shape.
//!
//! Burn's autodiff `conv2d` keeps its input for the backward pass whatever is tracked. With a
//! frozen weight only the input's gradient is needed, and that is a transposed convolution of the
//! output gradient with the weight; the input itself enters only through its size. The forward
//! is [`SdBackend::sd_conv2d`] and the backward [`SdBackend::sd_conv2d_input_grad`] of the inner
//! backend: by default Burn's `conv2d` and Burn's own `conv2d_x_backward` formula (`burn-backend`
//! `conv.rs`), so the gradient equals Burn's on backends that use that default (cubecl backends
//! have a kernel of their own and agree to rounding); flex runs stride-1 convolutions through
//! its own kernel (`ops::cpu::conv`), which agrees with Burn's to rounding. With a tracked
//! weight or bias, Burn's `conv2d` runs unchanged.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::TensorMetadata;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};

use crate::ops::SdBackend;

#[derive(Debug)]
struct FrozenConv2d;

/// What the backward needs: the weight (a parameter, held anyway), the input's height and width,
/// and the options.
#[derive(Debug, Clone)]
struct Saved<B: SdBackend> {
    weight: FloatTensor<B>,
    input_hw: [usize; 2],
    options: ConvOptions<2>,
}

impl<B: SdBackend> Backward<B, 1> for FrozenConv2d {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            let Saved {
                weight,
                input_hw,
                options,
            } = ops.state;
            let grad_x = B::sd_conv2d_input_grad(grad, weight, input_hw, options);
            grads.register::<B>(node.id, grad_x);
        }
    }
}

/// [`SdBackend::sd_conv2d`] on `Autodiff<B, C>`.
pub(super) fn sd_conv2d<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
    let frozen = !weight.is_tracked() && bias.as_ref().is_none_or(|b| !b.is_tracked());
    if !frozen {
        return <Autodiff<B, C> as ModuleOps<Autodiff<B, C>>>::conv2d(x, weight, bias, options);
    }
    let node = x.node.clone();
    let dims = x.primitive.shape().dims::<4>();
    let saved = Saved {
        weight: weight.primitive.clone(),
        input_hw: [dims[2], dims[3]],
        options: options.clone(),
    };
    let out = B::sd_conv2d(
        x.primitive,
        weight.primitive,
        bias.map(|b| b.primitive),
        options,
    );
    match FrozenConv2d.prepare::<C>([node]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(saved, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
