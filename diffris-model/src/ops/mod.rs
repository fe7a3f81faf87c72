//! Backend operations the Stable Diffusion stack needs beyond what Burn provides.
//!
//! [`SdBackend`] extends Burn's `Backend` with four operations that, under autodiff, keep less
//! for the backward pass than Burn's own:
//!
//! - a memory-efficient attention: it keeps only its inputs, its output and two numbers per
//!   query row, and recomputes the attention probabilities block by block in the backward pass
//!   (see [`attention`]). Burn 0.21's autodiff attention is built from differentiable matmul and
//!   softmax ops, so it keeps the `[B, H, N, N]` scores, exponentials and probabilities: at
//!   SD-1.5's 64x64 latent level (N = 4096, 8 heads) 512 MiB per tensor per sample, in every
//!   self-attention layer;
//! - SiLU keeping only its input (Burn's `x * sigmoid(x)` keeps `sigmoid(x)` too);
//! - a convolution with a frozen weight keeping only its input's shape (Burn's keeps the input),
//!   and a linear layer with a frozen weight whose input gradient flex computes without copying
//!   the weight;
//! - ReLU keeping its output, which the next layer keeps anyway (Burn's keeps the input; the
//!   gradient mask `x > 0` is the same as `relu(x) > 0`).
//!
//! The last three give Burn's gradients bit for bit on the CPU backend.
//!
//! Model code that runs the UNet is generic over `B: SdBackend`. Every backend
//! `diffris-experiments` can compile in implements it (a plain backend with the blocked
//! attention of [`attention`] and Burn's kernels for the rest, `Autodiff<B>` with the custom
//! backward of [`autodiff`], flex with the parallel CPU kernels of [`cpu`]); a new backend
//! needs one line, `impl SdBackend for MyBackend {}`. cuda is Burn's fused cubecl backend
//! (`Fusion<CubeBackend<..>>`, autotuned kernels; wgpu the plain one): every default here is a
//! composition of Burn's operations, which fusion records and fuses like any other.

pub mod attention;
mod autodiff;
#[cfg(feature = "flex")]
pub mod cpu;
pub mod geglu;
pub mod norm;

use attention::{InputGrads, RowStats, Wanted};

use burn::nn::Linear;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

/// What a backend must be for diffris to train on it with Burn's distributed data parallel
/// (DDP): Burn's `DistributedBackend` in builds with the `ddp` feature, any backend otherwise.
///
/// Burn 0.21 makes `Autodiff<B>` an autodiff backend only for `B: DistributedBackend` once its
/// `distributed` feature is on, so in a `ddp` build every backend that trains must be one; of
/// the backends diffris compiles in, only cubecl's (CUDA) implements it.
#[cfg(feature = "ddp")]
pub trait DataParallelBackend: burn::tensor::backend::distributed::DistributedBackend {}
#[cfg(feature = "ddp")]
impl<B: burn::tensor::backend::distributed::DistributedBackend> DataParallelBackend for B {}
/// What a backend must be for diffris to train on it with Burn's distributed data parallel
/// (DDP): Burn's `DistributedBackend` in builds with the `ddp` feature, any backend otherwise.
#[cfg(not(feature = "ddp"))]
pub trait DataParallelBackend: Backend {}
#[cfg(not(feature = "ddp"))]
impl<B: Backend> DataParallelBackend for B {}

/// A Burn backend with the operations of the SD stack.
pub trait SdBackend: DataParallelBackend {
    /// `softmax(q k^T / sqrt(D)) v` per head, without mask or bias.
    ///
    /// The default (plain backends: evaluation, encoding, `explain`, `segment`) is
    /// [`sd_attention_forward`](Self::sd_attention_forward) without its statistics: query
    /// blocks whose `[B, H, rows, Nk]` scores hold at most 64 MiB, so inference memory per
    /// sample is bounded as training's is (Burn's fallback, which cubecl runs without autotune
    /// and tries while autotuning, materialises all `[B, H, Nq, Nk]` scores: 16 GiB at SD-1.5's
    /// 64x64 level for 32 samples), and inference gives the numbers of an untracked training
    /// forward. `Autodiff<B>` overrides it with the memory-efficient backward; flex with its CPU
    /// kernel ([`cpu`]); libtorch with its scaled-dot-product attention (flash or
    /// memory-efficient kernels on CUDA).
    ///
    /// # Shapes
    /// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]` -> `[B, H, Nq, Dv]`.
    fn sd_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let tensor = |t| Tensor::<Self, 4>::from_primitive(TensorPrimitive::Float(t));
        let (out, _) = Self::sd_attention_forward(tensor(q), tensor(k), tensor(v));
        out.into_primitive().tensor()
    }

    /// The forward of the memory-efficient attention: the output and the softmax statistics of
    /// every query row, which [`sd_attention_backward`](Self::sd_attention_backward) takes.
    /// `Autodiff<B>` calls it on its inner backend. The default is the backend-generic blocked
    /// computation ([`attention::forward_blocked`]); flex runs a parallel CPU kernel
    /// ([`cpu`]).
    ///
    /// # Shapes
    /// `q`: `[B, H, Nq, D]`, `k`: `[B, H, Nk, D]`, `v`: `[B, H, Nk, Dv]` -> (`[B, H, Nq, Dv]`,
    /// [`RowStats`]).
    fn sd_attention_forward(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
    ) -> (Tensor<Self, 4>, RowStats<Self>) {
        attention::forward_blocked(q, k, v)
    }

    /// The gradients of the tracked inputs of
    /// [`sd_attention_forward`](Self::sd_attention_forward), recomputing the probabilities
    /// from its statistics. The default is [`attention::backward`].
    ///
    /// # Shapes
    /// `q`, `k`, `v` as for the forward; `out` and `grad_out`: `[B, H, Nq, Dv]` -> gradients
    /// shaped as `q`, `k`, `v`.
    fn sd_attention_backward(
        inputs: [Tensor<Self, 4>; 3],
        out: Tensor<Self, 4>,
        stats: RowStats<Self>,
        grad_out: Tensor<Self, 4>,
        wanted: Wanted,
    ) -> InputGrads<Self> {
        attention::backward(inputs, out, stats, grad_out, wanted)
    }

    /// `x * sigmoid(x)`; `Autodiff<B>` keeps only `x` for the backward pass.
    fn sd_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_composed::<Self>(x)
    }

    /// The gradient of [`sd_silu`](Self::sd_silu)'s input given its output's gradient, with
    /// the operations Burn's autodiff uses for `x * sigmoid(x)`: `sigmoid_backward(s, grad *
    /// x) + grad * s` with `s = sigmoid(x)`. Flex computes the same in parallel ([`cpu`]).
    ///
    /// # Shapes
    /// `x`, `grad`: any, the same -> the same.
    fn sd_silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_backward_composed::<Self>(x, grad)
    }

    /// GEGLU, `a * gelu(gate)` with `(a, gate)` the halves of `h`'s last axis (diffusers'
    /// feed-forward). `Autodiff<B>` keeps only `h` for the backward pass. The default is
    /// Burn's ops ([`geglu::forward`]); flex runs it in parallel ([`cpu`]) with the same bits.
    ///
    /// # Shapes
    /// `[B, N, 2I]` -> `[B, N, I]`.
    fn sd_geglu(h: Tensor<Self, 3>) -> Tensor<Self, 3> {
        geglu::forward(h)
    }

    /// The gradient of [`sd_geglu`](Self::sd_geglu)'s input given its output's gradient; the
    /// default is [`geglu::backward`] (Burn's autodiff arithmetic through `chunk`, `gelu` and
    /// `mul`).
    ///
    /// # Shapes
    /// `h`: `[B, N, 2I]`, `grad`: `[B, N, I]` -> `[B, N, 2I]`.
    fn sd_geglu_backward(h: Tensor<Self, 3>, grad: Tensor<Self, 3>) -> Tensor<Self, 3> {
        geglu::backward(h, grad)
    }

    /// `max(x, 0)`; `Autodiff<B>` keeps the output (not the input) for the backward pass.
    fn sd_relu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::relu(x)
    }

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
    /// kernel ([`cpu::conv`]).
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
    /// shapes through its own kernel ([`cpu::conv_weight`]).
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

    /// Burn's `linear`, `x @ weight + bias`; `Autodiff<B>` makes a frozen weight's layer one
    /// node whose backward is [`sd_linear_input_grad`](Self::sd_linear_input_grad).
    ///
    /// # Shapes
    /// `x`: `[..., D_in]` (rank 2 or more), `weight`: `[D_in, D_out]`, `bias`: `[D_out]` ->
    /// `[..., D_out]`.
    fn sd_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
    ) -> FloatTensor<Self> {
        Self::linear(x, weight, bias)
    }

    /// The gradient of [`sd_linear`](Self::sd_linear)'s input, `grad @ weight^T`. The default
    /// is Burn's `linear_x_backward`; flex multiplies by the transposed weight as a strided
    /// view instead of copying it.
    ///
    /// # Shapes
    /// `grad`: `[..., D_out]`, `weight`: `[D_in, D_out]` -> `[..., D_in]`.
    /// Group or layer normalisation, `(x - mean) / sqrt(var + eps) * gamma + beta` per row of
    /// `rows` (biased variance), by a kernel of the backend: `None` where the backend has none
    /// for these inputs, and the caller composes Burn's operations. The default asks
    /// [`sd_norm_forward`](Self::sd_norm_forward); `Autodiff<B>` makes a frozen `gamma` /
    /// `beta`'s normalisation one node that keeps `x` and the row statistics, with
    /// [`sd_norm_backward`](Self::sd_norm_backward) as its backward.
    ///
    /// # Shapes
    /// `x`: `rows.rows * rows.len()` elements in any shape, `gamma`, `beta`: `[groups *
    /// channels]` -> the shape of `x`.
    fn sd_norm(
        x: FloatTensor<Self>,
        gamma: Option<FloatTensor<Self>>,
        beta: Option<FloatTensor<Self>>,
        rows: norm::Rows,
        eps: f64,
    ) -> Option<FloatTensor<Self>> {
        Self::sd_norm_forward(x, gamma, beta, rows, eps).map(|(out, _)| out)
    }

    /// The kernel behind [`sd_norm`](Self::sd_norm): the output and per row the mean and
    /// `sqrt(var + eps)`, or `None` (the default: no kernel).
    ///
    /// # Shapes
    /// as [`sd_norm`](Self::sd_norm), and `[rows]` twice.
    fn sd_norm_forward(
        _x: FloatTensor<Self>,
        _gamma: Option<FloatTensor<Self>>,
        _beta: Option<FloatTensor<Self>>,
        _rows: norm::Rows,
        _eps: f64,
    ) -> Option<(FloatTensor<Self>, [FloatTensor<Self>; 2])> {
        None
    }

    /// The gradient of [`sd_norm_forward`](Self::sd_norm_forward)'s input given its output's
    /// gradient and its statistics `[mean, std]`. Only called on a backend whose
    /// `sd_norm_forward` gave `Some`; the default panics.
    ///
    /// # Shapes
    /// `x`, `grad`: as `x` of the forward, `stats`: `[rows]` each -> the shape of `x`.
    fn sd_norm_backward(
        _x: FloatTensor<Self>,
        _stats: [FloatTensor<Self>; 2],
        _gamma: Option<FloatTensor<Self>>,
        _rows: norm::Rows,
        _grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        unreachable!("sd_norm_backward is only called where sd_norm_forward has a kernel")
    }

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

    fn sd_linear_input_grad(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear_x_backward(weight, grad)
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

/// `x * sigmoid(x)` from Burn's ops (the default of [`SdBackend::sd_silu`]).
pub fn silu_composed<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(x.clone(), B::sigmoid(x))
}

/// SiLU's input gradient from Burn's ops, as its autodiff computes it through `mul` and
/// `sigmoid` (the default of [`SdBackend::sd_silu_backward`]).
pub fn silu_backward_composed<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let s = B::sigmoid(x.clone());
    let through_sigmoid = B::sigmoid_backward(s.clone(), B::float_mul(grad.clone(), x));
    let direct = B::float_mul(grad, s);
    B::float_add(through_sigmoid, direct)
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

/// SiLU through [`SdBackend::sd_silu`].
///
/// # Shapes
/// any -> the same.
pub fn sd_silu<B: SdBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::sd_silu(
        x.into_primitive().tensor(),
    )))
}

/// GEGLU through [`SdBackend::sd_geglu`].
///
/// # Shapes
/// `[B, N, 2I]` -> `[B, N, I]`.
pub fn sd_geglu<B: SdBackend>(h: Tensor<B, 3>) -> Tensor<B, 3> {
    B::sd_geglu(h)
}

/// ReLU through [`SdBackend::sd_relu`].
///
/// # Shapes
/// any -> the same.
pub fn sd_relu<B: SdBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::sd_relu(
        x.into_primitive().tensor(),
    )))
}

/// `x.swap_dims(dim1, dim2)` through [`SdBackend::sd_swap_dims`].
///
/// # Shapes
/// any -> `dim1` and `dim2` swapped.
pub fn swap_dims<B: SdBackend, const D: usize>(
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

/// `x.transpose()` (the last two axes swapped) through [`SdBackend::sd_swap_dims`].
///
/// # Shapes
/// `[..., M, N]` -> `[..., N, M]`.
pub fn transpose<B: SdBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    swap_dims(x, D - 2, D - 1)
}

/// `x.permute(axes)` through [`SdBackend::sd_permute`].
///
/// # Shapes
/// any -> axis `i` is the input's axis `axes[i]`.
pub fn permute<B: SdBackend, const D: usize>(x: Tensor<B, D>, axes: [usize; D]) -> Tensor<B, D> {
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

/// [`SdBackend::sd_transpose`] on a tensor.
///
/// # Shapes
/// `[B, M, N]` -> `[B, N, M]`.
pub fn sd_transpose<B: SdBackend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    Tensor::from_primitive(TensorPrimitive::Float(B::sd_transpose(
        x.into_primitive().tensor(),
    )))
}

/// `linear.forward(x)` through [`SdBackend::sd_linear`].
///
/// # Shapes
/// `[..., D_in]` -> `[..., D_out]` (rank 2 or more).
pub fn sd_linear<B: SdBackend, const D: usize>(
    linear: &Linear<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    assert!(D >= 2, "sd_linear: the input needs a batch axis");
    let out = B::sd_linear(
        x.into_primitive().tensor(),
        linear.weight.val().into_primitive().tensor(),
        linear
            .bias
            .as_ref()
            .map(|b| b.val().into_primitive().tensor()),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `conv.forward(x)` through [`SdBackend::sd_conv2d`] (Burn's module path for `Same`
/// padding, which the SD stack does not use).
///
/// Asymmetric padding (the VAE's downsamplers pad right and bottom only) is applied here, as
/// Burn does it (a zero tensor with the input assigned into it), but with zeros of the input's
/// dtype: Burn 0.21's `pad` makes an f32 tensor whatever the input's dtype.
///
/// # Shapes
/// `[B, C_in, H, W]` -> `[B, C_out, H', W']`.
pub fn sd_conv2d<B: SdBackend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
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
    let zeros = crate::precision::to_dtype(zeros, x.dtype());
    zeros.slice_assign([0..b, 0..c, rows[0]..rows[0] + h, cols[0]..cols[0] + w], x)
}

#[cfg(feature = "wgpu")]
impl SdBackend for burn::backend::Wgpu {}

#[cfg(feature = "cuda")]
impl SdBackend for burn::backend::Cuda {}

/// libtorch's swapped and permuted views share their input's storage handle (see
/// [`SdBackend::sd_swap_dims`]); its inference attention is libtorch's scaled-dot-product
/// attention.
#[cfg(feature = "tch")]
impl SdBackend for burn::backend::LibTorch {
    fn sd_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let options = burn::tensor::ops::AttentionModuleOptions::default();
        Self::attention(q, k, v, None, None, options)
    }

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
