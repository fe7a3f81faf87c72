//! [`SdBackend`] for Burn's autodiff backend: each operation is one graph node with its own
//! backward, keeping less for the backward pass than Burn's composition of differentiable ops.

mod activation;
mod attention;
mod conv;
mod linear;
mod norm;
mod transpose;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Tensor, TensorPrimitive};

use crate::SdBackend;
use crate::activation::ActivationOps;
use crate::attention::AttentionOps;
use crate::conv::ConvOps;
use crate::layout::LayoutOps;
use crate::linear::LinearOps;
use crate::norm::NormOps;
use crate::pool::PoolOps;

impl<B: SdBackend, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn sd_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        attention::sd_attention::<B, C>(q, k, v)
    }
}

impl<B: SdBackend, C: CheckpointStrategy> ActivationOps for Autodiff<B, C> {
    fn sd_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        activation::sd_silu::<B, C>(x)
    }

    fn sd_geglu(h: Tensor<Self, 3>) -> Tensor<Self, 3> {
        let out = activation::sd_geglu::<B, C>(h.into_primitive().tensor());
        Tensor::from_primitive(TensorPrimitive::Float(out))
    }

    fn sd_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        activation::sd_relu::<B, C>(x)
    }
}

impl<B: SdBackend, C: CheckpointStrategy> ConvOps for Autodiff<B, C> {
    fn sd_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        conv::sd_conv2d::<B, C>(x, weight, bias, options)
    }
}

impl<B: SdBackend, C: CheckpointStrategy> LinearOps for Autodiff<B, C> {
    fn sd_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        linear::sd_linear::<B, C>(x, weight, bias)
    }
}

impl<B: SdBackend, C: CheckpointStrategy> NormOps for Autodiff<B, C> {
    fn sd_norm(
        x: FloatTensor<Self>,
        gamma: Option<FloatTensor<Self>>,
        beta: Option<FloatTensor<Self>>,
        rows: crate::norm::Rows,
        eps: f64,
    ) -> Option<FloatTensor<Self>> {
        norm::sd_norm::<B, C>(x, gamma, beta, rows, eps)
    }
}

impl<B: SdBackend, C: CheckpointStrategy> PoolOps for Autodiff<B, C> {
    fn sd_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        B::sd_on_pool(f)
    }
}

impl<B: SdBackend, C: CheckpointStrategy> LayoutOps for Autodiff<B, C> {
    fn sd_transpose(x: FloatTensor<Self>) -> FloatTensor<Self> {
        transpose::sd_transpose::<B, C>(x)
    }

    fn sd_swap_dims(x: FloatTensor<Self>, dim1: usize, dim2: usize) -> FloatTensor<Self> {
        transpose::sd_swap_dims::<B, C>(x, dim1, dim2)
    }

    fn sd_permute(x: FloatTensor<Self>, axes: &[usize]) -> FloatTensor<Self> {
        transpose::sd_permute::<B, C>(x, axes)
    }
}

/// An inner primitive as a tensor of rank `D`.
fn tensor<B: SdBackend, const D: usize>(primitive: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// A tensor's inner primitive.
fn primitive<B: SdBackend, const D: usize>(tensor: Tensor<B, D>) -> FloatTensor<B> {
    tensor.into_primitive().tensor()
}
