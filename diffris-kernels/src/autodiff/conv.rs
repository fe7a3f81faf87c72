//! A 2-D convolution whose weight (and bias) take no gradient keeps only the input's shape.
//!
//! Burn's autodiff `conv2d` keeps its input for the backward pass whatever is tracked. With a
//! frozen weight only the input's gradient is needed, and that is a transposed convolution of the
//! output gradient with the weight; the input itself enters only through its size. The forward
//! is [`SdBackend::sd_conv2d`] and the backward [`SdBackend::sd_conv2d_input_grad`] of the inner
//! backend: by default Burn's `conv2d` and Burn's own `conv2d_x_backward` formula (`burn-backend`
//! `conv.rs`), so the gradient equals Burn's on backends that use that default (cubecl backends
//! have a kernel of their own and agree to rounding); flex runs stride-1 convolutions through
//! its own kernel (`flex::conv`), which agrees with Burn's to rounding.
//!
//! A convolution with a tracked weight or bias (a trained layer) runs Burn's autodiff `conv2d`
//! unchanged, except on backends whose [`SdBackend::sd_conv2d_trains`] says they have kernels
//! for its shape (flex, stride 1): then it is one node of the same three backward parts Burn's
//! has (input, weight and bias gradients), the first two from [`SdBackend::sd_conv2d_input_grad`]
//! and [`SdBackend::sd_conv2d_weight_grad`], the bias's from Burn's `conv2d_bias_backward`.
//! It keeps what Burn's keeps: the input and the weight (and the bias, for its shape).

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::TensorMetadata;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};

use crate::SdBackend;

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
        if B::sd_conv2d_trains(&x.primitive, &weight.primitive, &options) {
            return trained_conv2d::<B, C>(x, weight, bias, options);
        }
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

#[derive(Debug)]
struct TrainedConv2d;

/// What the trained convolution's backward needs (as Burn's node keeps it).
#[derive(Debug, Clone)]
struct TrainedSaved<B: SdBackend> {
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
}

impl<B: SdBackend> TrainedSaved<B> {
    /// Registers the gradients of the tracked parents, in Burn's order (input, weight, bias).
    fn backward(
        self,
        grad: FloatTensor<B>,
        [x_node, weight_node, bias_node]: [Option<NodeId>; 3],
        grads: &mut Gradients,
    ) {
        let Self {
            x,
            weight,
            bias,
            options,
        } = self;
        if let Some(id) = x_node {
            let dims = x.shape().dims::<4>();
            let grad_x = B::sd_conv2d_input_grad(
                grad.clone(),
                weight.clone(),
                [dims[2], dims[3]],
                options.clone(),
            );
            grads.register::<B>(id, grad_x);
        }
        if let Some(id) = weight_node {
            let grad_w = B::sd_conv2d_weight_grad(x.clone(), weight, grad.clone(), options);
            grads.register::<B>(id, grad_w);
        }
        if let (Some(id), Some(bias)) = (bias_node, bias) {
            grads.register::<B>(id, B::conv2d_bias_backward(x, bias, grad));
        }
    }
}

impl<B: SdBackend> Backward<B, 3> for TrainedConv2d {
    type State = TrainedSaved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [x, w, b] = ops.parents.map(|p| p.map(|n| n.id));
        ops.state.backward(grad, [x, w, b], grads);
    }
}

impl<B: SdBackend> Backward<B, 2> for TrainedConv2d {
    type State = TrainedSaved<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [x, w] = ops.parents.map(|p| p.map(|n| n.id));
        ops.state.backward(grad, [x, w, None], grads);
    }
}

/// A convolution with a tracked weight or bias through the inner backend's kernels (see the
/// module documentation).
fn trained_conv2d<B: SdBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
    let saved = TrainedSaved {
        x: x.primitive.clone(),
        weight: weight.primitive.clone(),
        bias: bias.as_ref().map(|b| b.primitive.clone()),
        options: options.clone(),
    };
    let out = B::sd_conv2d(
        x.primitive,
        weight.primitive,
        bias.as_ref().map(|b| b.primitive.clone()),
        options,
    );
    match bias {
        Some(bias) => match TrainedConv2d
            .prepare::<C>([x.node, weight.node, bias.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(saved, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
        None => match TrainedConv2d
            .prepare::<C>([x.node, weight.node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(saved, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    }
}
