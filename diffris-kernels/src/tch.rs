//! libtorch (burn-tch): its own attention, and its layout workaround.
//!
//! The attention is libtorch's scaled-dot-product attention (flash or memory-efficient kernels
//! on CUDA). The swaps and permutes share their input's storage handle, as Burn's own fix of
//! tracel-ai/burn#5375 does after 0.21: with a Burn release that has it, this override of the
//! layout family goes (see [`crate::layout`]).

use burn::backend::LibTorch;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use crate::activation::ActivationOps;
use crate::attention::AttentionOps;
use crate::conv::ConvOps;
use crate::layout::LayoutOps;
use crate::linear::LinearOps;
use crate::norm::NormOps;

/// libtorch's swapped and permuted views share their input's storage handle (see
/// [`LayoutOps::sd_swap_dims`]); its inference attention is libtorch's scaled-dot-product
/// attention.
impl AttentionOps for LibTorch {
    fn sd_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let options = burn::tensor::ops::AttentionModuleOptions::default();
        Self::attention(q, k, v, None, None, options)
    }
}

impl ActivationOps for LibTorch {}

impl ConvOps for LibTorch {}

impl LinearOps for LibTorch {}

impl NormOps for LibTorch {}

impl crate::pool::PoolOps for LibTorch {}

impl LayoutOps for LibTorch {
    fn sd_swap_dims(x: FloatTensor<Self>, dim1: usize, dim2: usize) -> FloatTensor<Self> {
        let storage = x.storage.clone();
        let view = x.tensor.transpose(dim1 as i64, dim2 as i64);
        burn::backend::libtorch::TchTensor::from_existing(view, storage)
    }

    fn sd_permute(x: FloatTensor<Self>, axes: &[usize]) -> FloatTensor<Self> {
        let storage = x.storage.clone();
        let view = x
            .tensor
            .permute(axes.iter().map(|&a| a as i64).collect::<Vec<_>>());
        burn::backend::libtorch::TchTensor::from_existing(view, storage)
    }
}
