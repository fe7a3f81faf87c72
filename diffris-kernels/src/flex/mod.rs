//! CPU kernels behind [`SdBackend`](crate::SdBackend) on Burn's flex backend.
//!
//! Burn's flex computes attention one head after another on one thread, with one scalar `expf`
//! per score; through the backend-generic blocked attention (a composition of tensor ops) the
//! training step spends most of its time outside the parallel matrix products. These kernels
//! keep the same arithmetic and run it in parallel tasks with SIMD softmax rows.

pub mod attention;
pub mod conv;
pub mod conv_weight;
pub mod geglu;
mod matmul;
pub mod norm;
pub mod rows;
pub mod silu;
pub mod transpose;

use burn::backend::Flex;
use burn::tensor::ops::{ConvOptions, FloatTensor, FloatTensorOps, ModuleOps};
use burn::tensor::{DType, Shape, Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

use super::attention::{InputGrads, RowStats, Wanted};
use crate::activation::ActivationOps;
use crate::attention::AttentionOps;
use crate::conv::ConvOps;
use crate::dtype::{to_dtype, widen};
use crate::layout::LayoutOps;
use crate::linear::LinearOps;
use crate::norm::NormOps;

/// Dims of `q`, `k`, `v` shaped `[B, H, N, D]`.
fn dims(q: &Shape, k: &Shape, v: &Shape) -> attention::Dims {
    assert_eq!(
        q.num_dims(),
        4,
        "attention: q must be [B, H, N, D], got {q:?}"
    );
    assert_eq!(
        k.num_dims(),
        4,
        "attention: k must be [B, H, N, D], got {k:?}"
    );
    assert_eq!(
        v.num_dims(),
        4,
        "attention: v must be [B, H, N, D], got {v:?}"
    );
    assert!(
        q[0] == k[0]
            && q[1] == k[1]
            && k[0] == v[0]
            && k[1] == v[1]
            && k[2] == v[2]
            && q[3] == k[3],
        "attention: q {q:?}, k {k:?} and v {v:?} do not fit together"
    );
    attention::Dims {
        bh: q[0] * q[1],
        nq: q[2],
        nk: k[2],
        d: q[3],
        dv: v[3],
    }
}

/// The f32 elements of a flex tensor in row-major order (copied only if strided).
///
/// The attention's inputs are usually head-split views (`[B, N, H, D]` with the middle axes
/// swapped): rows of `D` contiguous values at arbitrary strides. Those are copied a row at a
/// time in parallel; flex's own copy walks every element through a generic strided index on
/// one thread.
fn contiguous(t: Tensor<Flex, 4>) -> FlexTensor {
    use rayon::prelude::*;
    let t: FlexTensor = t.into_primitive().tensor();
    let layout = t.layout();
    let (shape, strides, offset) = (
        layout.shape().clone(),
        layout.strides().to_vec(),
        layout.start_offset(),
    );
    let rows_view = t.dtype() == DType::F32
        && !t.is_contiguous()
        && strides[3] == 1
        && strides[..3].iter().all(|&s| s >= 0);
    if !rows_view {
        return t.to_contiguous();
    }
    let [_, n1, n2, d] = [shape[0], shape[1], shape[2], shape[3]];
    let src: &[f32] = t.storage();
    let mut out = vec![0f32; shape.num_elements()];
    if d > 0 {
        out.par_chunks_mut(d)
            .with_min_len(256)
            .enumerate()
            .for_each(|(row, dst)| {
                let (i0, i1, i2) = (row / (n1 * n2), (row / n2) % n1, row % n2);
                let start = offset
                    + i0 * strides[0] as usize
                    + i1 * strides[1] as usize
                    + i2 * strides[2] as usize;
                dst.copy_from_slice(&src[start..start + d]);
            });
    }
    FlexTensor::from_data(TensorData::new(out, shape))
}

/// Whether `t` `[B, H, N, D]` is the head-split view of a row-major `[B, N, H, D]` buffer (what
/// `split_heads` makes of a projection's output): its gradient then goes back in that layout.
fn is_head_split(t: &Tensor<Flex, 4>) -> bool {
    let [_, h, n, d] = t.dims();
    let t: FlexTensor = t.clone().into_primitive().tensor();
    let layout = t.layout();
    let want = [(n * h * d) as isize, d as isize, (h * d) as isize, 1];
    layout.start_offset() == 0 && layout.strides() == want && h > 1 && n > 1
}

/// Row-major `[B, H, N, D]` values as a tensor of that shape laid out as `[B, N, H, D]` (the
/// head-split view of a contiguous buffer): `merge_heads` and the backward of `split_heads`
/// then reshape it without a copy. The permutation runs in parallel rows of `D`; flex's own
/// copy of a permuted view walks a generic strided index on one thread.
fn head_split(values: Vec<f32>, [b, h, n, d]: [usize; 4]) -> Tensor<Flex, 4> {
    use rayon::prelude::*;
    let mut out = vec![0f32; values.len()];
    if d > 0 {
        out.par_chunks_mut(d)
            .with_min_len(256)
            .enumerate()
            .for_each(|(row, dst)| {
                // dst is row (bi, ni, hi) of [B, N, H, D]; its source is (bi, hi, ni).
                let (bi, ni, hi) = (row / (n * h), (row / h) % n, row % h);
                let start = ((bi * h + hi) * n + ni) * d;
                dst.copy_from_slice(&values[start..start + d]);
            });
    }
    super::swap_dims(tensor(out, [b, n, h, d]), 1, 2)
}

/// Whether every given tensor is f32 (absent ones do not count).
fn all_f32<const N: usize>(tensors: [Option<&FlexTensor>; N]) -> bool {
    tensors
        .into_iter()
        .flatten()
        .all(|t| t.dtype() == DType::F32)
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 tensor (checked by the caller)")
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(from_values(values, shape.into())))
}

/// Whether the kernels take this dtype: f32, and the half types through f32 (as the generic
/// version computes them). f64 keeps the generic version, whose tests run in f64.
fn kernel_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
}

/// A flex tensor's f32 values in row-major order with its shape, or `None` for other dtypes.
fn f32_values(t: FloatTensor<Flex>) -> Option<(FlexTensor, Shape)> {
    (t.dtype() == DType::F32).then(|| {
        let shape = t.layout().shape().clone();
        (t.to_contiguous(), shape)
    })
}

fn from_values(values: Vec<f32>, shape: Shape) -> FloatTensor<Flex> {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The kernel's shape for a convolution of an input shaped `x` `[B, C_in, H, W]` with a weight
/// shaped `weight` `[C_out, C_in, kH, kW]`, or `None` where the kernel does not apply (stride or
/// dilation other than 1, groups, padding not below the kernel's side, an empty output).
fn conv_dims(x: &[usize], weight: &[usize], options: &ConvOptions<2>) -> Option<conv::Dims> {
    let plain = options.stride == [1, 1] && options.dilation == [1, 1] && options.groups == 1;
    let (&[batch, c_in, h, w], &[c_out, w_in, kh, kw]) = (x, weight) else {
        return None;
    };
    let dims = conv::Dims {
        batch,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        ph: options.padding[0],
        pw: options.padding[1],
    };
    (plain && c_in == w_in && dims.supported()).then_some(dims)
}

impl AttentionOps for Flex {
    fn sd_attention_forward(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
    ) -> (Tensor<Self, 4>, RowStats<Self>) {
        let dtype = q.dtype();
        if !kernel_dtype(dtype) {
            return super::attention::forward_blocked(q, k, v);
        }
        let [b, h, nq, _] = q.dims();
        let dv = v.dims()[3];
        let dims = dims(&q.shape(), &k.shape(), &v.shape());
        let [q, k, v] = [q, k, v].map(|t| contiguous(widen(t)));
        let f = attention::forward(values(&q), values(&k), values(&v), dims);
        // Laid out for merge_heads, which follows every attention of the SD stack.
        let out = to_dtype(head_split(f.out, [b, h, nq, dv]), dtype);
        let stats = RowStats {
            rows: nq.max(1),
            blocks: vec![(tensor(f.max, [b, h, nq, 1]), tensor(f.sum, [b, h, nq, 1]))],
        };
        (out, stats)
    }

    fn sd_attention_backward(
        [q, k, v]: [Tensor<Self, 4>; 3],
        out: Tensor<Self, 4>,
        stats: RowStats<Self>,
        grad_out: Tensor<Self, 4>,
        wanted: Wanted,
    ) -> InputGrads<Self> {
        let dtype = q.dtype();
        if !kernel_dtype(dtype) || stats.blocks.len() != 1 {
            return super::attention::backward([q, k, v], out, stats, grad_out, wanted);
        }
        let (q_shape, k_shape, v_shape) = (q.dims(), k.dims(), v.dims());
        // Each gradient in its input's layout: a head-split view's goes back head-split, so
        // the backward of split_heads reshapes it without a copy.
        let layouts = [&q, &k, &v].map(is_head_split);
        let dims = dims(&q.shape(), &k.shape(), &v.shape());
        let (max, sum) = stats.blocks.into_iter().next().expect("one block");
        let [q, k, v, out, grad_out, max, sum] =
            [q, k, v, out, grad_out, max, sum].map(|t| contiguous(widen(t)));
        let saved = attention::Saved {
            q: values(&q),
            k: values(&k),
            v: values(&v),
            out: values(&out),
            max: values(&max),
            sum: values(&sum),
            grad_out: values(&grad_out),
        };
        let grads = attention::backward(saved, dims, wanted);
        let wrap = |g: Vec<f32>, shape: [usize; 4], split: bool| {
            let t = if split {
                head_split(g, shape)
            } else {
                tensor(g, shape)
            };
            to_dtype(t, dtype)
        };
        InputGrads {
            q: grads.q.map(|g| wrap(g, q_shape, layouts[0])),
            k: grads.k.map(|g| wrap(g, k_shape, layouts[1])),
            v: grads.v.map(|g| wrap(g, v_shape, layouts[2])),
        }
    }
}

impl ActivationOps for Flex {
    fn sd_silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match f32_values(x.clone()) {
            Some((x, shape)) => from_values(silu::forward(values(&x)), shape),
            None => super::silu_composed::<Self>(x),
        }
    }

    fn sd_silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        match (f32_values(x.clone()), f32_values(grad.clone())) {
            (Some((x, shape)), Some((grad, _))) => {
                from_values(silu::backward(values(&x), values(&grad)), shape)
            }
            _ => super::silu_backward_composed::<Self>(x, grad),
        }
    }

    fn sd_geglu(h: Tensor<Self, 3>) -> Tensor<Self, 3> {
        if h.dtype() != DType::F32 {
            return super::geglu::forward(h);
        }
        let [b, n, two_i] = h.dims();
        let h: FlexTensor = h.into_primitive().tensor();
        let h = h.to_contiguous();
        tensor(geglu::forward(values(&h), two_i / 2), [b, n, two_i / 2])
    }

    fn sd_geglu_backward(h: Tensor<Self, 3>, grad: Tensor<Self, 3>) -> Tensor<Self, 3> {
        if h.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return super::geglu::backward(h, grad);
        }
        let [b, n, two_i] = h.dims();
        let h: FlexTensor = h.into_primitive().tensor();
        let grad: FlexTensor = grad.into_primitive().tensor();
        let (h, grad) = (h.to_contiguous(), grad.to_contiguous());
        tensor(
            geglu::backward(values(&h), values(&grad), two_i / 2),
            [b, n, two_i],
        )
    }
}

impl ConvOps for Flex {
    fn sd_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let f32s = all_f32([Some(&x), Some(&weight), bias.as_ref()]);
        let dims = conv_dims(x.layout().shape(), weight.layout().shape(), &options).filter(|d| {
            bias.as_ref()
                .is_none_or(|b| b.layout().shape()[..] == [d.c_out])
        });
        let (true, Some(dims)) = (f32s, dims) else {
            return Self::conv2d(x, weight, bias, options);
        };
        let [oh, ow] = dims.out_hw();
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let bias = bias.map(|b| b.to_contiguous());
        let out = conv::forward(values(&x), values(&weight), bias.as_ref().map(values), dims);
        from_values(out, [dims.batch, dims.c_out, oh, ow].into())
    }

    fn sd_conv2d_input_grad(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        input_hw: [usize; 2],
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let (gs, ws) = (grad.layout().shape(), weight.layout().shape());
        let f32s = all_f32([Some(&grad), Some(&weight)]);
        // The input's shape: its batch from the gradient, its channels from the weight.
        let dims = (gs.num_dims() == 4 && ws.num_dims() == 4)
            .then(|| conv_dims(&[gs[0], ws[1], input_hw[0], input_hw[1]], ws, &options))
            .flatten()
            .filter(|d| gs[..] == [d.batch, d.c_out, d.out_hw()[0], d.out_hw()[1]]);
        let (true, Some(dims)) = (f32s, dims) else {
            return super::conv2d_input_grad_burn::<Self>(grad, weight, input_hw, options);
        };
        let (grad, weight) = (grad.to_contiguous(), weight.to_contiguous());
        let out = conv::input_grad(values(&grad), values(&weight), dims);
        from_values(
            out,
            [dims.batch, dims.c_in, input_hw[0], input_hw[1]].into(),
        )
    }

    fn sd_conv2d_trains(
        x: &FloatTensor<Self>,
        weight: &FloatTensor<Self>,
        options: &ConvOptions<2>,
    ) -> bool {
        all_f32([Some(x), Some(weight)])
            && conv_dims(x.layout().shape(), weight.layout().shape(), options).is_some()
    }

    fn sd_conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let f32s = all_f32([Some(&x), Some(&weight), Some(&grad)]);
        let ws = weight.layout().shape().clone();
        let dims = conv_dims(x.layout().shape(), &ws, &options).filter(|d| {
            grad.layout().shape()[..] == [d.batch, d.c_out, d.out_hw()[0], d.out_hw()[1]]
        });
        let (true, Some(dims)) = (f32s, dims) else {
            return Self::conv2d_weight_backward(x, weight, grad, options);
        };
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        from_values(
            conv_weight::weight_grad(values(&x), values(&grad), dims),
            ws,
        )
    }
}

impl LinearOps for Flex {
    fn sd_linear_input_grad(
        grad: FloatTensor<Self>,
        weight: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // grad [..., D_out] as [rows, D_out] times weight^T [D_out, D_in] (a strided view,
        // which flex's two-dimensional product reads in place).
        let shape = grad.layout().shape().clone();
        let ws = weight.layout().shape();
        if shape.num_dims() < 2 || ws.num_dims() != 2 || shape[shape.num_dims() - 1] != ws[1] {
            return Self::linear_x_backward(weight, grad);
        }
        let d_in = ws[0];
        let d_out = ws[1];
        let rows = shape.num_elements() / d_out.max(1);
        let grad = Self::float_reshape(grad, [rows, d_out].into());
        let out = Self::float_matmul(grad, Self::float_swap_dims(weight, 0, 1));
        let mut out_shape = shape;
        let last = out_shape.num_dims() - 1;
        out_shape[last] = d_in;
        Self::float_reshape(out, out_shape)
    }
}

impl NormOps for Flex {
    fn sd_norm_forward(
        x: FloatTensor<Self>,
        gamma: Option<FloatTensor<Self>>,
        beta: Option<FloatTensor<Self>>,
        rows: norm::Rows,
        eps: f64,
    ) -> Option<(FloatTensor<Self>, [FloatTensor<Self>; 2])> {
        let f32s = all_f32([Some(&x), gamma.as_ref(), beta.as_ref()]);
        let params = rows.groups * rows.channels;
        let fits = rows.groups > 0
            && x.layout().shape().num_elements() == rows.rows * rows.len()
            && [&gamma, &beta]
                .into_iter()
                .flatten()
                .all(|p| p.layout().shape().num_elements() == params);
        if !f32s || !fits {
            return None;
        }
        let shape = x.layout().shape().clone();
        let x = x.to_contiguous();
        let [gamma, beta] = [gamma, beta].map(|p| p.map(|p| p.to_contiguous()));
        let f = norm::forward(
            values(&x),
            gamma.as_ref().map(values),
            beta.as_ref().map(values),
            rows,
            eps as f32,
        );
        let stats = [f.mean, f.std].map(|s| from_values(s, [rows.rows].into()));
        Some((from_values(f.out, shape), stats))
    }

    fn sd_norm_backward(
        x: FloatTensor<Self>,
        [mean, std]: [FloatTensor<Self>; 2],
        gamma: Option<FloatTensor<Self>>,
        rows: norm::Rows,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let shape = x.layout().shape().clone();
        let [x, mean, std, grad] = [x, mean, std, grad].map(|t| t.to_contiguous());
        let gamma = gamma.map(|g| g.to_contiguous());
        let dx = norm::backward(
            values(&x),
            values(&mean),
            values(&std),
            gamma.as_ref().map(values),
            values(&grad),
            rows,
        );
        from_values(dx, shape)
    }
}

impl crate::pool::PoolOps for Flex {
    fn sd_on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        if rayon::current_thread_index().is_some() {
            f()
        } else {
            rayon::scope(|_| f())
        }
    }
}

impl LayoutOps for Flex {
    fn sd_transpose(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = x.layout().shape().clone();
        if x.dtype() != DType::F32 || shape.num_dims() != 3 {
            return Self::float_swap_dims(x, 1, 2);
        }
        // A swapped view of a contiguous tensor (what swap_dims gives) swaps back to it for free.
        let swapped_back = Self::float_swap_dims(x.clone(), 1, 2);
        if swapped_back.is_contiguous() {
            return swapped_back;
        }
        let [b, m, n] = [shape[0], shape[1], shape[2]];
        let x = x.to_contiguous();
        from_values(transpose::forward(values(&x), [b, m, n]), [b, n, m].into())
    }
}

/// Runs `f` in a fresh rayon pool of `threads` threads (the kernels' thread-count tests).
#[cfg(test)]
fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(f)
}
