//! The floating-point precision of the frozen Stable Diffusion stack.
//!
//! With [`Precision::F16`] or [`Precision::Bf16`] the frozen CLIP text encoder, VAE encoder and
//! UNet hold their weights in half precision and compute in it; everything trained (CP-adapter,
//! decoder, optimizer state, loss) stays in f32. The casts sit at the boundaries:
//!
//! - each frozen component casts its float inputs to the dtype of its own weights
//!   ([`to_dtype`]), so it can be called with f32 tensors whatever its precision;
//! - `DiffRis` casts the components' outputs (latents, text states, UNet taps) back to f32 and
//!   the adapted text to the UNet's dtype; the casts are differentiable, so the adapter still
//!   learns through the half-precision UNet;
//! - inside the half-precision stack, the normalisations ([`crate::norm`]) and the softmax of
//!   the attention ([`diffris_kernels::attention`]) compute in f32 and cast their result back, as
//!   PyTorch's half-precision kernels accumulate in f32. A sum of squares of activations in
//!   the hundreds overflows f16 (largest finite value 65504), and a row sum of 4096
//!   probabilities in f16 keeps three significant digits.
//!
//! [`Precision::F32`] changes nothing: no cast is added anywhere ([`to_dtype`] returns its input
//! when the dtype already matches), so f32 results are bit-identical to a build without this
//! module.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorCreationOptions};
use serde::{Deserialize, Serialize};

pub use diffris_kernels::dtype::{is_half, to_dtype, widen};

/// The precision of the frozen SD stack's weights and arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    /// Single precision (the reference).
    #[default]
    F32,
    /// IEEE half precision: 10-bit mantissa, largest finite value 65504.
    F16,
    /// bfloat16: f32's range with an 7-bit mantissa.
    Bf16,
}

impl Precision {
    /// Every precision, in the order the CLI lists them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];

    /// The Burn dtype of the frozen weights.
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// Whether this is [`Precision::F32`].
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// Bytes per frozen weight.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 | Precision::Bf16 => 2,
        }
    }

    /// The name the CLI and the recipe files use.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown precision `{s}` (expected f32, f16 or bf16)"))
    }
}

/// Runs `f` on `x` in f32 when `x` is half precision and casts the result back; runs `f` on
/// `x` directly otherwise. For the steps where half precision loses too much: normalisation
/// statistics, softmax.
///
/// # Shapes
/// `x`: any -> whatever `f` returns.
pub fn in_f32<B: Backend, const D: usize, const E: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, D>) -> Tensor<B, E>,
) -> Tensor<B, E> {
    let dtype = x.dtype();
    to_dtype(f(widen(x)), dtype)
}

/// Casts every float parameter of a module (trainable or not) to one dtype.
struct CastParams(DType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if tensor.dtype() == self.0 {
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let cast = if tensor.is_require_grad() {
            // A trainable parameter stays a leaf of the autodiff graph: made anew from its
            // data (a cast would be an operation recorded on the graph).
            let device = tensor.device();
            let data = tensor.into_data().convert_dtype(self.0);
            Tensor::from_data(data, TensorCreationOptions::new(device).with_dtype(self.0))
                .require_grad()
        } else {
            tensor.cast(self.0)
        };
        Param::from_mapped_value(id, cast, mapper)
    }
}

/// `module` with every float parameter cast to `precision`'s dtype (a no-op for f32 weights
/// and [`Precision::F32`]). Cast frozen modules after `no_grad()`: their parameters are then
/// cast on the device; a trainable parameter goes through host memory to stay a leaf.
pub fn cast_module<B: Backend, M: Module<B>>(module: M, precision: Precision) -> M {
    module.map(&mut CastParams(precision.dtype().into()))
}

/// The dtype of a parameter tensor (what a frozen component computes in).
pub fn param_dtype<B: Backend, const D: usize>(param: &Param<Tensor<B, D>>) -> DType {
    param.val().dtype()
}

/// `module` with every float parameter tracked (on an autodiff backend; elsewhere unchanged):
/// weights read from a file arrive untracked, and a module that trains needs them tracked.
pub fn tracked<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut Track)
}

/// Marks every float parameter as tracked.
struct Track;

impl<B: Backend> ModuleMapper<B> for Track {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        Param::from_mapped_value(id, tensor.set_require_grad(true), mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::nn::LinearConfig;

    #[test]
    fn parses_and_prints_every_precision() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::Bf16);
        let err = "f8".parse::<Precision>().unwrap_err();
        assert!(err.contains("f8") && err.contains("bf16"), "{err}");
    }

    #[test]
    fn cast_module_casts_every_parameter_and_keeps_values() {
        let device = Default::default();
        let linear = LinearConfig::new(3, 2).init::<Flex>(&device);
        let before = linear.weight.val().into_data().to_vec::<f32>().unwrap();
        let half = cast_module(linear, Precision::F16);
        assert_eq!(param_dtype(&half.weight), DType::F16);
        assert_eq!(param_dtype(half.bias.as_ref().unwrap()), DType::F16);
        let after = half
            .weight
            .val()
            .cast(FloatDType::F32)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (a, b) in before.iter().zip(&after) {
            // f16 rounds to 11 significant bits: relative error at most 2^-11.
            assert!((a - b).abs() <= a.abs() * 2f32.powi(-11), "{a} vs {b}");
        }
    }

    #[test]
    fn in_f32_computes_in_single_precision_and_returns_the_input_dtype() {
        let device = Default::default();
        // 300^2 = 90000 overflows f16; the mean of squares in f32 does not.
        let x = Tensor::<Flex, 1>::from_floats([300.0, -300.0], &device).cast(FloatDType::F16);
        let mean_square = in_f32(x.clone(), |t| t.square().mean());
        assert_eq!(mean_square.dtype(), DType::F16);
        let v: f32 = mean_square.cast(FloatDType::F32).into_scalar();
        assert!(v.is_infinite(), "90000 does not fit in f16: {v}");
        let ratio = in_f32(x, |t| t.clone().square().mean().sqrt() / t.abs().max());
        assert_eq!(ratio.cast(FloatDType::F32).into_scalar(), 1.0);
    }
}
