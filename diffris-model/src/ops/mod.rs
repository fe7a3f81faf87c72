//! Backend operations the Stable Diffusion stack needs beyond what Burn provides.
//!
//! [`SdBackend`] extends Burn's `Backend` with a memory-efficient attention: under autodiff it
//! keeps for the backward pass only its inputs, its output and two numbers per query row, and
//! recomputes the attention probabilities block by block in the backward pass (see
//! [`attention`]). Burn 0.21's own autodiff attention is built from differentiable matmul and
//! softmax ops, so it keeps the `[B, H, N, N]` scores, exponentials and probabilities until the
//! backward pass: at SD-1.5's 64x64 latent level (N = 4096, 8 heads) that is 512 MiB per tensor
//! per sample, in every self-attention layer.
//!
//! Model code that runs the UNet is generic over `B: SdBackend`. Every backend
//! `diffris-experiments` can compile in implements it (a plain backend with Burn's own
//! attention kernel, `Autodiff<B>` with the custom backward of [`autodiff`]); a new backend needs
//! one line, `impl SdBackend for MyBackend {}`.

pub mod attention;
mod autodiff;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{AttentionModuleOptions, FloatTensor};
use burn::tensor::{Tensor, TensorPrimitive};

/// A Burn backend with the operations of the SD stack.
pub trait SdBackend: Backend {
    /// `softmax(q k^T / sqrt(D)) v` per head, without mask or bias.
    ///
    /// The default (for backends without autodiff) is Burn's attention kernel; `Autodiff<B>`
    /// overrides it with the memory-efficient backward.
    ///
    /// # Shapes
    /// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]` -> `[B, H, Nq, Dv]`.
    fn sd_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::attention(q, k, v, None, None, AttentionModuleOptions::default())
    }
}

/// An autodiff backend whose inner backend is an [`SdBackend`] too (what training needs).
pub trait SdAutodiffBackend: AutodiffBackend<InnerBackend: SdBackend> + SdBackend {}

impl<B> SdAutodiffBackend for B
where
    B: AutodiffBackend + SdBackend,
    B::InnerBackend: SdBackend,
{
}

/// Multi-head attention through [`SdBackend::sd_attention`].
///
/// # Shapes
/// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]` -> `[B, H, Nq, Dv]`.
pub fn sd_attention<B: SdBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let out = B::sd_attention(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(feature = "flex")]
impl SdBackend for burn::backend::Flex {}

#[cfg(feature = "wgpu")]
impl SdBackend for burn::backend::Wgpu {}

#[cfg(feature = "cuda")]
impl SdBackend for burn::backend::Cuda {}

#[cfg(feature = "tch")]
impl SdBackend for burn::backend::LibTorch {}
