//! The layout family: axis swaps and permutations. Model code swaps and permutes axes only
//! through these ([`swap_dims`], [`permute`], [`transpose`]; `clippy.toml` refuses Burn's
//! tensor methods), because burn-tch 0.21's views do not share their input's storage handle
//! (tracel-ai/burn#5375). With a Burn release that has the fix, the family can go (model code
//! would call Burn's methods again), and with it the libtorch override in [`crate::tch`]; the
//! flex and autodiff [`sd_transpose`](LayoutOps::sd_transpose) (a contiguous copy) would stay
//! as a plain function.

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// Axis swaps and permutations of the SD stack.
pub trait LayoutOps: Backend {
    /// Swaps the last two axes of a `[B, M, N]` tensor. The default is Burn's `swap_dims` (a
    /// strided view); flex copies in parallel tiles into a contiguous `[B, N, M]`, so what
    /// follows (reshapes, element-wise operations, the kernels' input copies) reads contiguous
    /// memory instead of taking flex's one-thread strided paths. `Autodiff<B>` makes it one node
    /// whose backward is the same operation on the gradient.
    ///
    /// # Shapes
    /// `[B, M, N]` -> `[B, N, M]`.
    fn sd_transpose(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::sd_swap_dims(x, 1, 2)
    }

    /// Burn's `swap_dims` (a view). Model code swaps and permutes axes through this and
    /// [`sd_permute`](Self::sd_permute) only ([`swap_dims`], [`permute`], [`transpose`]; clippy
    /// refuses Burn's tensor methods): burn-tch 0.21 gives a swapped or permuted view a storage
    /// handle of its own, so an operation that may work in place on its input (an addition, an
    /// activation) counts the view as unshared and overwrites the tensor it was taken from
    /// (tracel-ai/burn#5375, fixed after 0.21). PCMRD's token layers add positions to a
    /// swapped view of the fusion output, which the next fusion stage then read overwritten:
    /// on libtorch its loss and gradients were wrong. The libtorch implementation shares the
    /// handle, as Burn's later fix does; every other backend keeps Burn's operation.
    ///
    /// # Shapes
    /// any -> `dim1` and `dim2` swapped.
    fn sd_swap_dims(x: FloatTensor<Self>, dim1: usize, dim2: usize) -> FloatTensor<Self> {
        Self::float_swap_dims(x, dim1, dim2)
    }

    /// Burn's `permute` (a view); see [`sd_swap_dims`](Self::sd_swap_dims) for why model code
    /// calls this.
    ///
    /// # Shapes
    /// any -> axis `i` is the input's axis `axes[i]`.
    fn sd_permute(x: FloatTensor<Self>, axes: &[usize]) -> FloatTensor<Self> {
        Self::float_permute(x, axes)
    }
}

/// `x.swap_dims(dim1, dim2)` through [`LayoutOps::sd_swap_dims`].
///
/// # Shapes
/// any -> `dim1` and `dim2` swapped.
pub fn swap_dims<B: LayoutOps, const D: usize>(
    x: Tensor<B, D>,
    dim1: usize,
    dim2: usize,
) -> Tensor<B, D> {
    assert!(
        dim1 < D && dim2 < D,
        "swap_dims({dim1}, {dim2}) of a rank-{D} tensor"
    );
    Tensor::from_primitive(TensorPrimitive::Float(B::sd_swap_dims(
        x.into_primitive().tensor(),
        dim1,
        dim2,
    )))
}

/// `x.transpose()` (the last two axes swapped) through [`LayoutOps::sd_swap_dims`].
///
/// # Shapes
/// `[..., M, N]` -> `[..., N, M]`.
pub fn transpose<B: LayoutOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    swap_dims(x, D - 2, D - 1)
}

/// `x.permute(axes)` through [`LayoutOps::sd_permute`].
///
/// # Shapes
/// any -> axis `i` is the input's axis `axes[i]`.
pub fn permute<B: LayoutOps, const D: usize>(x: Tensor<B, D>, axes: [usize; D]) -> Tensor<B, D> {
    let mut seen = [false; D];
    for &a in &axes {
        assert!(a < D && !seen[a], "permute({axes:?}) of a rank-{D} tensor");
        seen[a] = true;
    }
    Tensor::from_primitive(TensorPrimitive::Float(B::sd_permute(
        x.into_primitive().tensor(),
        &axes,
    )))
}

/// [`LayoutOps::sd_transpose`] on a tensor.
///
/// # Shapes
/// `[B, M, N]` -> `[B, N, M]`.
pub fn sd_transpose<B: LayoutOps>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    Tensor::from_primitive(TensorPrimitive::Float(B::sd_transpose(
        x.into_primitive().tensor(),
    )))
}
