//! The convolution family: a frozen weight's convolution that keeps only its input's shape for
//! the backward pass, and the gradients of a trained one by a backend's own kernels.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

use crate::dtype::to_dtype;

/// The convolutions of the SD stack and the decoders.
pub trait ConvOps: Backend {
    /// Burn's `conv2d`; `Autodiff<B>` keeps only the input's shape when neither the weight nor
    /// the bias is tracked.
    ///
    /// # Shapes
    /// `x`: `[B, C_in, H, W]`, `weight`: `[C_out, C_in / groups, kH, kW]`, `bias`: `[C_out]`
    /// -> `[B, C_out, H', W']`.
    fn sd_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, bias, options)
    }

    /// The gradient of [`sd_conv2d`](Self::sd_conv2d)'s input `x` (whose height and width are
    /// `input_hw`) given its output's gradient, with the weight taking no gradient. The
    /// default is the backend's own `conv2d_x_backward`, the kernel Burn's autodiff `conv2d`
    /// uses ([`conv2d_input_grad_burn`]): cubecl's autotuned data-gradient kernels, Burn's
    /// transposed-convolution formula elsewhere; flex runs stride-1 shapes through its own
    /// kernel ([`crate::flex::conv`]).
    ///
    /// # Shapes
    /// `grad`: `[B, C_out, H', W']`, `weight`: `[C_out, C_in / groups, kH, kW]` ->
    /// `[B, C_in, H, W]`.
    fn sd_conv2d_input_grad(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        input_hw: [usize; 2],
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        conv2d_input_grad_burn::<Self>(grad, weight, input_hw, options)
    }

    /// Whether `Autodiff<B>` runs a convolution with a tracked weight (a trained layer) as one
    /// node of [`sd_conv2d`](Self::sd_conv2d), [`sd_conv2d_input_grad`](Self::sd_conv2d_input_grad)
    /// and [`sd_conv2d_weight_grad`](Self::sd_conv2d_weight_grad): where the backend has kernels
    /// for them (flex, for stride-1 f32 shapes). Otherwise (the default) Burn's autodiff
    /// `conv2d` runs unchanged.
    fn sd_conv2d_trains(
        _x: &FloatTensor<Self>,
        _weight: &FloatTensor<Self>,
        _options: &ConvOptions<2>,
    ) -> bool {
        false
    }

    /// The gradient of [`sd_conv2d`](Self::sd_conv2d)'s weight given its input `x` and its
    /// output's gradient. The default is Burn's `conv2d_weight_backward`; flex runs stride-1
    /// shapes through its own kernel ([`crate::flex::conv_weight`]).
    ///
    /// # Shapes
    /// `x`: `[B, C_in, H, W]`, `weight`: `[C_out, C_in / groups, kH, kW]`, `grad`:
    /// `[B, C_out, H', W']` -> the weight's shape.
    fn sd_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, options)
    }
}

/// A convolution's input gradient as Burn's autodiff computes it: the backend's
/// `conv2d_x_backward` (by default Burn's formula, the transposed convolution of the output
/// gradient with the weight; cubecl's implicit-GEMM data-gradient kernels, autotuned). Burn's
/// signature takes the input itself, of which every implementation reads only the shape: an
/// uninitialised tensor of that shape stands in for it, since the frozen convolution's node
/// keeps only the input's height and width.
///
/// # Shapes
/// `grad`: `[B, C_out, H', W']`, `weight`: `[C_out, C_in / groups, kH, kW]` ->
/// `[B, C_in, H, W]` with `[H, W]` = `input_hw`.
pub fn conv2d_input_grad_burn<B: Backend>(
    grad: FloatTensor<B>,
    weight: FloatTensor<B>,
    input_hw: [usize; 2],
    options: ConvOptions<2>,
) -> FloatTensor<B> {
    let [batch, _, _, _] = grad.shape().dims();
    let [_, c_in_per_group, _, _] = weight.shape().dims();
    let shape = [
        batch,
        c_in_per_group * options.groups,
        input_hw[0],
        input_hw[1],
    ];
    let stand_in = B::float_empty(shape.into(), &B::float_device(&grad), grad.dtype().into());
    B::conv2d_x_backward(stand_in, weight, grad, options)
}

/// `conv.forward(x)` through [`ConvOps::sd_conv2d`] (Burn's module path for `Same`
/// padding, which the SD stack does not use).
///
/// Asymmetric padding (the VAE's downsamplers pad right and bottom only) is applied here, as
/// Burn does it (a zero tensor with the input assigned into it), but with zeros of the input's
/// dtype: Burn 0.21's `pad` makes an f32 tensor whatever the input's dtype.
///
/// # Shapes
/// `[B, C_in, H, W]` -> `[B, C_out, H', W']`.
pub fn sd_conv2d<B: ConvOps>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let (x, padding) = match conv.padding {
        PaddingConfig2d::Valid => (x, [0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            (x, [top, left])
        }
        PaddingConfig2d::Explicit(top, left, bottom, right) => {
            (pad_zeros(x, [top, bottom], [left, right]), [0, 0])
        }
        _ => return conv.forward(x),
    };
    let options = ConvOptions::new(conv.stride, padding, conv.dilation, conv.groups);
    let out = B::sd_conv2d(
        x.into_primitive().tensor(),
        conv.weight.val().into_primitive().tensor(),
        conv.bias
            .as_ref()
            .map(|b| b.val().into_primitive().tensor()),
        options,
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `x` padded with zeros of its own dtype: `rows` before and after the height axis, `cols`
/// before and after the width axis.
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H + rows[0] + rows[1], W + cols[0] + cols[1]]`.
fn pad_zeros<B: Backend>(x: Tensor<B, 4>, rows: [usize; 2], cols: [usize; 2]) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let zeros = Tensor::<B, 4>::zeros(
        [b, c, h + rows[0] + rows[1], w + cols[0] + cols[1]],
        &x.device(),
    );
    let zeros = to_dtype(zeros, x.dtype());
    zeros.slice_assign([0..b, 0..c, rows[0]..rows[0] + h, cols[0]..cols[0] + w], x)
}
