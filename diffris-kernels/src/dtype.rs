//! The dtype helpers the kernels share with the model's precision handling
//! (`diffris_model::precision`): casts that add no operation when nothing changes.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

/// Whether `dtype` is a half-precision float (f16 or bf16).
pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// `x` cast to `dtype`; `x` itself, with no operation recorded, when it already has it.
///
/// # Shapes
/// any -> the same.
pub fn to_dtype<B: Backend, const D: usize>(x: Tensor<B, D>, dtype: DType) -> Tensor<B, D> {
    if x.dtype() == dtype { x } else { x.cast(dtype) }
}

/// `x` in f32 when it is half precision; `x` itself otherwise.
///
/// # Shapes
/// any -> the same.
pub fn widen<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if is_half(x.dtype()) {
        x.cast(FloatDType::F32)
    } else {
        x
    }
}
