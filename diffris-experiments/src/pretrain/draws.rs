//! The random draws of one sample of latent-diffusion training: the latent drawn from the VAE's
//! posterior, the noise added to it, its timestep and whether its caption is dropped. Each
//! sample's draws come from their own ChaCha8 stream, seeded by the run's seed and the sample's
//! position in the run's stream of samples, so a step computes the same numbers however the run
//! is cut into passes, devices or resumed segments.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The draws of one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleDraws {
    /// Standard normal values for `mean + std * e` (the posterior sample), `C*h*w`.
    pub posterior: Vec<f32>,
    /// The standard normal noise the UNet learns to predict, `C*h*w`.
    pub noise: Vec<f32>,
    /// Uniform in `0..steps`.
    pub timestep: usize,
    /// Whether the caption is replaced by the empty one (classifier-free guidance).
    pub drop_caption: bool,
}

/// The seed of the sample at `position` of a stream seeded `seed` (SplitMix64 of both, so
/// neighbouring positions get unrelated streams).
pub fn sample_seed(seed: u64, position: u64) -> u64 {
    splitmix64(seed ^ splitmix64(position))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The draws of the sample at `position` of the stream seeded `seed`: `len` latent values,
/// `steps` timesteps, captions dropped with probability `dropout`. The order of the draws is
/// fixed: posterior values, noise values, timestep, dropout.
pub fn draw(seed: u64, position: u64, len: usize, steps: usize, dropout: f64) -> SampleDraws {
    let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(seed, position));
    let posterior = normals(&mut rng, len);
    let noise = normals(&mut rng, len);
    let timestep = rng.random_range(0..steps);
    let drop_caption = rng.random::<f64>() < dropout;
    SampleDraws {
        posterior,
        noise,
        timestep,
        drop_caption,
    }
}

/// `n` standard normal values by the Box-Muller transform, two per pair of uniforms (computed in
/// f64, rounded to f32).
pub fn normals(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1], so its logarithm is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let angle = std::f64::consts::TAU * u2;
        out.push((r * angle.cos()) as f32);
        out.push((r * angle.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 400,000 values: the sample mean within 0.01 of 0 (its standard error is 0.0016), the
    /// variance within 0.01 of 1, and the share beyond 1.96 within 0.005 of 5%.
    #[test]
    fn normals_have_the_moments_of_a_standard_normal() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let v = normals(&mut rng, 400_000);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let tail = v.iter().filter(|x| x.abs() > 1.96).count() as f64 / n;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.01, "{var}");
        assert!((tail - 0.05).abs() < 0.005, "{tail}");
    }

    /// A sample's draws depend on the seed and its position only; timesteps cover the range
    /// evenly and captions drop at the asked rate.
    #[test]
    fn draws_are_a_function_of_seed_and_position() {
        assert_eq!(draw(3, 17, 8, 1000, 0.1), draw(3, 17, 8, 1000, 0.1));
        assert_ne!(draw(3, 17, 8, 1000, 0.1), draw(3, 18, 8, 1000, 0.1));
        assert_ne!(draw(3, 17, 8, 1000, 0.1), draw(4, 17, 8, 1000, 0.1));
        let n = 20_000;
        let draws: Vec<SampleDraws> = (0..n).map(|p| draw(0, p, 1, 1000, 0.1)).collect();
        let dropped = draws.iter().filter(|d| d.drop_caption).count() as f64 / n as f64;
        assert!((dropped - 0.1).abs() < 0.01, "{dropped}");
        let low = draws.iter().filter(|d| d.timestep < 500).count() as f64 / n as f64;
        assert!((low - 0.5).abs() < 0.02, "{low}");
        assert!(draws.iter().all(|d| d.timestep < 1000));
        assert!((0..100).all(|p| !draw(0, p, 1, 1000, 0.0).drop_caption));
    }
}
