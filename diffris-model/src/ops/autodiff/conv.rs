//! A 2-D convolution whose weight (and bias) take no gradient keeps only the input's shape.
//!
//! Burn's autodiff `conv2d` keeps its input for the backward pass whatever is tracked. With a
//! frozen weight only the input's gradient is needed, and that is a transposed convolution of the
//! output gradient with the weight; the input itself enters only through its size. The backward
//! here is Burn's own `conv2d_x_backward` formula (`burn-backend` `conv.rs`), so the gradient
//! equals Burn's on backends that use that default (the CPU backend does; cubecl backends have a
//! kernel of their own and agree to rounding). With a tracked weight or bias, Burn's `conv2d`
//! runs unchanged.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::TensorMetadata;
use burn::tensor::ops::conv::calculate_padding_out;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor, ModuleOps};

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
            let [_, _, kh, kw] = weight.shape().dims();
            let [_, _, oh, ow] = grad.shape().dims();
            let pad_out = |i: usize, k: usize, size_in: usize, size_out: usize| {
                let (s, p, d) = (options.stride[i], options.padding[i], options.dilation[i]);
                calculate_padding_out(k, s, p, d, size_in, size_out)
            };
            let transpose = ConvTransposeOptions::new(
                options.stride,
                options.padding,
                [
                    pad_out(0, kh, input_hw[0], oh),
                    pad_out(1, kw, input_hw[1], ow),
                ],
                options.dilation,
                options.groups,
            );
            grads.register::<B>(node.id, B::conv_transpose2d(grad, weight, None, transpose));
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
    let out = B::conv2d(
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
