//! Backend operations the Stable Diffusion stack needs beyond what Burn provides, in a crate
//! of their own below `diffris-model` (which holds no kernels).
//!
//! [`SdBackend`] extends Burn's `Backend` with operations of seven families, most of which, under
//! autodiff, keep less for the backward pass than Burn's own:
//!
//! - attention: a memory-efficient attention that keeps only its inputs, its output and two
//!   numbers per query row, and recomputes the attention probabilities block by block in the
//!   backward pass (see [`attention`]). Burn 0.21's autodiff attention is built from
//!   differentiable matmul and softmax ops, so it keeps the `[B, H, N, N]` scores, exponentials
//!   and probabilities: at SD-1.5's 64x64 latent level (N = 4096, 8 heads) 512 MiB per tensor
//!   per sample, in every self-attention layer;
//! - activations: SiLU keeping only its input (Burn's `x * sigmoid(x)` keeps `sigmoid(x)` too),
//!   GEGLU keeping only its input ([`geglu`]), ReLU keeping its output, which the next layer
//!   keeps anyway (Burn's keeps the input; the gradient mask `x > 0` is the same as
//!   `relu(x) > 0`);
//! - convolution: a frozen weight's convolution keeping only its input's shape (Burn's keeps
//!   the input), and the weight gradient of a trained one by flex's own kernel;
//! - linear: a frozen weight's layer whose input gradient flex computes without copying the
//!   weight;
//! - normalisation: group and layer norms by a backend kernel where it has one ([`norm`]),
//!   keeping the input and the row statistics;
//! - layout: transposes, swaps and permutes, which libtorch runs as views that share their
//!   handle (a workaround of tracel-ai/burn#5375, fixed after Burn 0.21: with a Burn release
//!   that has the fix, [`SdBackend::sd_swap_dims`] and its siblings can go);
//! - pool: where a whole step is issued from (flex: one of rayon's threads, so that its many
//!   small operations do not each hand their loops over to the pool; see [`pool`]).
//!
//! The frozen-weight convolution, linear layer and the activations give Burn's gradients bit for
//! bit on the CPU backend. [`dtype`] holds the casts the kernels share with the model's
//! precision handling.
//!
//! Each family is a trait in its own file ([`attention`], [`activation`], [`conv`], [`linear`],
//! [`norm`], [`layout`], [`pool`]) with a default made of Burn's operations (the pool's: the
//! calling thread); `Autodiff<B>` implements each with its own graph nodes (`autodiff/`), flex with its parallel CPU kernels ([`flex`]),
//! libtorch with its attention and its layout workaround (`tch.rs`), wgpu and cuda take the
//! defaults (`backends.rs`). [`SdBackend`] combines the seven, as Burn's `Backend` combines its op
//! traits; model code is generic over `B: SdBackend`. cuda is Burn's fused cubecl backend
//! (`Fusion<CubeBackend<..>>`, autotuned kernels; wgpu the plain one): every default here is a
//! composition of Burn's operations, which fusion records and fuses like any other.

pub mod activation;
pub mod attention;
mod autodiff;
mod backends;
pub mod conv;
pub mod dtype;
#[cfg(feature = "flex")]
pub mod flex;
pub mod geglu;
pub mod layout;
pub mod linear;
pub mod norm;
pub mod pool;
#[cfg(feature = "tch")]
mod tch;

pub use activation::{
    ActivationOps, sd_geglu, sd_relu, sd_silu, silu_backward_composed, silu_composed,
};
pub use attention::{AttentionOps, sd_attention};
pub use conv::{ConvOps, conv2d_input_grad_burn, sd_conv2d};
pub use layout::{LayoutOps, permute, sd_transpose, swap_dims, transpose};
pub use linear::{LinearOps, sd_linear};
pub use norm::NormOps;
pub use pool::PoolOps;

use burn::tensor::backend::AutodiffBackend;

/// A Burn backend with the operations of the SD stack: its seven families, combined as Burn's
/// `Backend` combines its op traits. Every backend with all seven is one (a new backend
/// implements each family, taking its defaults with an empty `impl`, as [`backends`] does for
/// wgpu and cuda).
pub trait SdBackend:
    AttentionOps + ActivationOps + ConvOps + LinearOps + NormOps + LayoutOps + PoolOps
{
}

impl<B> SdBackend for B where
    B: AttentionOps + ActivationOps + ConvOps + LinearOps + NormOps + LayoutOps + PoolOps
{
}

/// An autodiff backend whose inner backend is an [`SdBackend`] too (what training needs).
pub trait SdAutodiffBackend: AutodiffBackend<InnerBackend: SdBackend> + SdBackend {}

impl<B> SdAutodiffBackend for B
where
    B: AutodiffBackend + SdBackend,
    B::InnerBackend: SdBackend,
{
}
