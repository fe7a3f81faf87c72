//! Stable Diffusion's noise schedule, as diffusers computes it: the forward process that noises
//! a latent for training ([`NoiseSchedule::add_noise`], DDPM with epsilon prediction) and the
//! deterministic DDIM sampler that turns noise into a latent ([`NoiseSchedule::ddim_step`]).
//!
//! SD-1.x trains on 1,000 steps with "scaled-linear" betas: `beta_t` is the square of a linear
//! ramp from `sqrt(0.00085)` to `sqrt(0.012)` (diffusers' `DDPMScheduler` with
//! `beta_schedule="scaled_linear"`, the `scheduler/scheduler_config.json` of every SD-1.x
//! release). `alpha_bar_t = prod_{s <= t} (1 - beta_s)`. Every value is f32 as in diffusers:
//! the ramp is computed as PyTorch's `linspace` does on the CPU (the first half counted up from
//! the start, the second half down from the end, in f32), the cumulative product accumulates in
//! f64 and rounds each value to f32 (PyTorch's CPU `cumprod` accumulates in double).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// SD-1.x's training schedule: `num_train_timesteps`, `beta_start`, `beta_end`.
pub const SD_TRAIN_STEPS: usize = 1000;
pub const SD_BETA_START: f64 = 0.00085;
pub const SD_BETA_END: f64 = 0.012;

/// The betas and their cumulative products of a DDPM schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    /// `beta_t`, `t = 0 .. T-1`.
    pub betas: Vec<f32>,
    /// `alpha_bar_t = prod_{s <= t} (1 - beta_s)`.
    pub alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    /// SD-1.x's schedule (1,000 scaled-linear steps from 0.00085 to 0.012).
    pub fn sd() -> Self {
        Self::scaled_linear(SD_BETA_START, SD_BETA_END, SD_TRAIN_STEPS)
    }

    /// `steps` betas, the squares of a linear ramp from `sqrt(beta_start)` to `sqrt(beta_end)`.
    pub fn scaled_linear(beta_start: f64, beta_end: f64, steps: usize) -> Self {
        assert!(steps >= 2, "a schedule needs at least two steps");
        let ramp = linspace_f32(beta_start.sqrt() as f32, beta_end.sqrt() as f32, steps);
        let betas: Vec<f32> = ramp.iter().map(|r| r * r).collect();
        let mut product = 1f64;
        let alphas_cumprod = betas
            .iter()
            .map(|&b| {
                product *= (1.0 - b) as f64;
                product as f32
            })
            .collect();
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// The number of training timesteps `T`.
    pub fn steps(&self) -> usize {
        self.betas.len()
    }

    /// `sqrt(alpha_bar_t)` and `sqrt(1 - alpha_bar_t)`, in f32 as diffusers' `add_noise`.
    pub fn coefficients(&self, t: usize) -> (f32, f32) {
        let a = self.alphas_cumprod[t];
        (a.sqrt(), (1.0 - a).sqrt())
    }

    /// The forward process: `sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise`, one timestep
    /// per sample (diffusers' `DDPMScheduler.add_noise`).
    ///
    /// # Shapes
    /// `x0`, `noise`: `[B, C, H, W]`, `timesteps`: `B` values below [`Self::steps`] ->
    /// `[B, C, H, W]`.
    pub fn add_noise<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Tensor<B, 4> {
        let [b, _, _, _] = x0.dims();
        assert_eq!(timesteps.len(), b, "add_noise: one timestep per sample");
        let (signal, noise_scale): (Vec<f32>, Vec<f32>) =
            timesteps.iter().map(|&t| self.coefficients(t)).unzip();
        let device = x0.device();
        let column =
            |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, [b, 1, 1, 1]), &device);
        x0 * column(signal) + noise * column(noise_scale)
    }

    /// The timesteps of a DDIM sampler with `inference_steps` steps, from the noisiest down,
    /// with diffusers' defaults for SD-1.x (`timestep_spacing="leading"`, `steps_offset=1`):
    /// `k * (T / n) + 1` for `k = n-1 .. 0`.
    pub fn ddim_timesteps(&self, inference_steps: usize) -> Vec<usize> {
        assert!(
            (1..=self.steps()).contains(&inference_steps),
            "DDIM needs between 1 and {} steps, not {inference_steps}",
            self.steps()
        );
        let ratio = self.steps() / inference_steps;
        (0..inference_steps).rev().map(|k| k * ratio + 1).collect()
    }

    /// One deterministic DDIM step (`eta = 0`) from timestep `t` to `t - T/n`, given the
    /// predicted noise `eps` (diffusers' `DDIMScheduler.step` with `set_alpha_to_one=False`:
    /// below step 0 the final `alpha_bar` is `alpha_bar_0`; no clipping of the predicted sample).
    ///
    /// # Shapes
    /// `sample`, `eps`: `[B, C, H, W]` -> `[B, C, H, W]`.
    pub fn ddim_step<B: Backend>(
        &self,
        sample: Tensor<B, 4>,
        eps: Tensor<B, 4>,
        t: usize,
        inference_steps: usize,
    ) -> Tensor<B, 4> {
        let prev = t as i64 - (self.steps() / inference_steps) as i64;
        let a_t = self.alphas_cumprod[t];
        let a_prev = if prev >= 0 {
            self.alphas_cumprod[prev as usize]
        } else {
            self.alphas_cumprod[0]
        };
        let beta_t = 1.0 - a_t;
        let x0 = (sample - eps.clone() * beta_t.sqrt()) / a_t.sqrt();
        x0 * a_prev.sqrt() + eps * (1.0 - a_prev).sqrt()
    }
}

/// `steps` evenly spaced f32 values from `start` to `end`, rounded as PyTorch's CPU `linspace`
/// rounds them in its scalar path: `start + step * i` for the first half, `end - step * (n-1-i)`
/// for the rest, with `step = (end - start) / (n - 1)` in f32. (Its vectorised path adds the
/// step lane by lane, which can differ in the last bit on some indices; see the fixture test.)
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sd_schedule_by_hand() {
        let s = NoiseSchedule::sd();
        assert_eq!(s.steps(), 1000);
        // The ramp's ends are the square roots of the configured betas, so the first and last
        // betas are those betas to f32 rounding.
        assert!(
            (s.betas[0] as f64 - 0.00085).abs() < 1e-10,
            "{}",
            s.betas[0]
        );
        assert!(
            (s.betas[999] as f64 - 0.012).abs() < 1e-9,
            "{}",
            s.betas[999]
        );
        // The ramp is linear in sqrt(beta): its midpoint lies halfway between the ends.
        let mid = (0.00085f64.sqrt() + 0.012f64.sqrt()) / 2.0;
        let between = (s.betas[499] as f64).sqrt() / 2.0 + (s.betas[500] as f64).sqrt() / 2.0;
        assert!((between - mid).abs() < 1e-7, "{between} vs {mid}");
        assert!(s.betas.windows(2).all(|w| w[0] < w[1]));
        // alpha_bar_0 = 1 - beta_0; alpha_bar_1 = (1 - beta_0)(1 - beta_1), each factor an f32
        // (`alphas = 1 - betas` is an f32 tensor in diffusers) multiplied in f64.
        assert_eq!(s.alphas_cumprod[0], 1.0 - s.betas[0]);
        let ab1 = (1.0 - s.betas[0]) as f64 * (1.0 - s.betas[1]) as f64;
        assert_eq!(s.alphas_cumprod[1], ab1 as f32);
        // The product of all 1000 factors: SD's final signal level (sqrt(alpha_bar_999) ~
        // 0.068, the figure the "zero terminal SNR" paper gives for SD).
        let all: f64 = s.betas.iter().map(|&b| (1.0 - b) as f64).product();
        assert_eq!(s.alphas_cumprod[999], all as f32);
        assert!((s.alphas_cumprod[999].sqrt() - 0.0683).abs() < 5e-4);
    }

    #[test]
    fn a_two_step_schedule_and_its_linspace() {
        // Two steps: the ramp is exactly its ends.
        assert_eq!(linspace_f32(1.0, 3.0, 2), [1.0, 3.0]);
        // Five steps from 0 to 1: 0, 0.25, 0.5 counted up (i < 2), then 0.5, 0.75, 1 counted
        // down from the end; all exact in binary.
        assert_eq!(linspace_f32(0.0, 1.0, 5), [0.0, 0.25, 0.5, 0.75, 1.0]);
        // Betas whose square roots (0.5, 0.75) and their squares are exact in f32.
        let s = NoiseSchedule::scaled_linear(0.25, 0.5625, 2);
        assert_eq!(s.betas, [0.25, 0.5625]);
        assert_eq!(s.alphas_cumprod, [0.75, 0.75 * 0.4375]);
    }

    #[test]
    fn ddim_timesteps_are_diffusers_leading_spacing_with_offset_one() {
        let s = NoiseSchedule::sd();
        assert_eq!(
            s.ddim_timesteps(10),
            [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        );
        assert_eq!(s.ddim_timesteps(50)[..3], [981, 961, 941]);
        assert_eq!(*s.ddim_timesteps(50).last().unwrap(), 1);
    }
}
