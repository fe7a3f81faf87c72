//! diffusers `embeddings.py`: the sinusoidal timestep projection and the timestep MLP.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Tensor, backend::Backend};

/// Sinusoidal timestep features (`get_timestep_embedding`): frequencies
/// `exp(-ln(10000) * k / (dim/2 - shift))`, laid out `[sin, cos]` or, flipped, `[cos, sin]`.
///
/// # Shapes
/// `timesteps`: `[B]` -> `[B, dim]`.
pub fn timestep_features<B: Backend>(
    timesteps: Tensor<B, 1>,
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let device = timesteps.device();
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f64.ln()) * k as f64 / (half as f64 - shift)).exp() as f32)
        .collect();
    let freqs = Tensor::<B, 1>::from_floats(freqs.as_slice(), &device).reshape([1, half]);
    let b = timesteps.dims()[0];
    let args = timesteps.reshape([b, 1]) * freqs;
    let (sin, cos) = (args.clone().sin(), args.cos());
    let emb = if flip_sin_to_cos {
        Tensor::cat(vec![cos, sin], 1)
    } else {
        Tensor::cat(vec![sin, cos], 1)
    };
    if dim % 2 == 1 {
        emb.pad((0, 1, 0, 0), burn::tensor::ops::PadMode::Constant(0.0))
    } else {
        emb
    }
}

/// `TimestepEmbedding`: `Linear -> SiLU -> Linear`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn new(d_in: usize, d_out: usize, device: &B::Device) -> Self {
        Self {
            linear_1: LinearConfig::new(d_in, d_out).init(device),
            linear_2: LinearConfig::new(d_out, d_out).init(device),
        }
    }

    /// # Shapes
    /// `[B, d_in]` -> `[B, d_out]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn matches_hand_computed_features() {
        // dim 4, half 2: freqs [1, exp(-ln(10000)/2) = 0.01]; t = 2.
        let device = Default::default();
        let t = Tensor::<Flex, 1>::from_floats([2.0], &device);
        let got: Vec<f32> = timestep_features(t, 4, true, 0.0)
            .into_data()
            .to_vec()
            .unwrap();
        let want = [2f32.cos(), 0.02f32.cos(), 2f32.sin(), 0.02f32.sin()];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}
