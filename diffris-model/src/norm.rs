//! Group and batch normalisation of `[B, C, H, W]` maps, computed with the parameters of Burn's
//! `GroupNorm` / `BatchNorm` modules (so checkpoint keys and records are unchanged) but laid out
//! for the CPU backend's fast paths.
//!
//! Burn's own modules multiply by `gamma.reshape([1, C, 1, 1])`. Broadcasting a `[1, C, 1, 1]`
//! operand over a batch of more than one is not one of burn-flex's SIMD broadcast patterns, so
//! those products (and their gradients) fell back to a scalar strided loop, which took the largest
//! share of a tiny-profile training step. Here every per-channel operand is first repeated to a
//! contiguous `[B, C, 1, 1]`, a pattern the backend vectorises (one scalar per row of `H * W`).
//! The arithmetic is the same as Burn's: biased variance, `(x - mean) / sqrt(var + eps)`.

use burn::nn::{BatchNorm, GroupNorm, LayerNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use diffris_kernels::SdBackend;
use diffris_kernels::norm::Rows;

use crate::precision::{Precision, cast_module, in_f32, is_half, param_dtype, to_dtype};

/// A per-channel vector `[C]` as a contiguous `[B, C, 1, 1]`.
fn per_sample_channel<B: Backend>(v: Tensor<B, 1>, batch: usize) -> Tensor<B, 4> {
    let c = v.dims()[0];
    v.reshape([1, c])
        .repeat_dim(0, batch)
        .reshape([batch, c, 1, 1])
}

/// `x * gamma + beta` per channel.
fn affine<B: Backend>(x: Tensor<B, 4>, gamma: Tensor<B, 1>, beta: Tensor<B, 1>) -> Tensor<B, 4> {
    let b = x.dims()[0];
    x * per_sample_channel(gamma, b) + per_sample_channel(beta, b)
}

/// Group normalisation with the parameters of `norm`.
/// A half-precision input is normalised in f32 (its statistics overflow or lose digits in
/// half precision; see [`crate::precision`]) and the result cast back.
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`.
pub fn group_norm<B: Backend>(norm: &GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    in_f32(x, |x| {
        let [b, c, h, w] = x.dims();
        let dtype = x.dtype();
        let g = norm.num_groups;
        let x = x.reshape([b, g, (c / g) * h * w]);
        let centred = x.clone() - x.mean_dim(2);
        let var = centred.clone().square().mean_dim(2);
        let normed = (centred / var.add_scalar(norm.epsilon).sqrt()).reshape([b, c, h, w]);
        match (&norm.gamma, &norm.beta) {
            (Some(gamma), Some(beta)) if norm.affine => affine(
                normed,
                to_dtype(gamma.val(), dtype),
                to_dtype(beta.val(), dtype),
            ),
            _ => normed,
        }
    })
}

/// [`group_norm`] through the backend's normalisation kernel where it has one
/// ([`SdBackend::sd_norm`]; flex does, for f32), Burn's composition otherwise. Same arithmetic
/// (the kernel sums the statistics in f64: outputs agree to f32 rounding); under autodiff with
/// frozen parameters one node keeps the input and two numbers per group. Half-precision inputs
/// or parameters take the composition.
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`.
pub fn sd_group_norm<B: SdBackend>(norm: &GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    // A half-precision stack keeps the composition (in f32), as `sd_layer_norm` does: its
    // results then stay those of the revisions before the kernel. (Through the kernel, the
    // f32 group norms of a bf16 stack moved the half-precision step probe's PCMRD losses from
    // 2e-4 / 1.9e-3 to 3.9e-3 / 1.04e-2 relative to f32: at bf16's own rounding, 2^-8, but
    // past that test's bound on the second loss.)
    let half_params = norm.gamma.as_ref().is_some_and(|g| is_half(param_dtype(g)));
    if is_half(x.dtype()) || half_params {
        return group_norm(norm, x);
    }
    in_f32(x, |x| {
        let [b, c, h, w] = x.dims();
        let g = norm.num_groups;
        let rows = Rows {
            rows: b * g,
            groups: g,
            channels: c / g,
            spatial: h * w,
        };
        let (gamma, beta) = match (&norm.gamma, &norm.beta) {
            (Some(gamma), Some(beta)) if norm.affine => (Some(gamma.val()), Some(beta.val())),
            _ => (None, None),
        };
        sd_norm(x.clone(), gamma, beta, rows, norm.epsilon).unwrap_or_else(|| group_norm(norm, x))
    })
}

/// [`layer_norm`] through the backend's normalisation kernel where it has one, as
/// [`sd_group_norm`]. Burn's `LayerNorm` does not expose its epsilon: `eps` must be the one it
/// was configured with.
///
/// # Shapes
/// `[..., C]` -> `[..., C]`.
pub fn sd_layer_norm<B: SdBackend, const D: usize>(
    norm: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    if is_half(x.dtype()) || is_half(param_dtype(&norm.gamma)) {
        return layer_norm(norm, x);
    }
    let c = x.dims()[D - 1];
    let rows = Rows {
        rows: x.shape().num_elements() / c.max(1),
        groups: 1,
        channels: c,
        spatial: 1,
    };
    let (gamma, beta) = (norm.gamma.val(), norm.beta.as_ref().map(|b| b.val()));
    sd_norm(x.clone(), Some(gamma), beta, rows, eps).unwrap_or_else(|| layer_norm(norm, x))
}

/// [`SdBackend::sd_norm`] on tensors (the parameters cast to `x`'s dtype).
fn sd_norm<B: SdBackend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Option<Tensor<B, 1>>,
    beta: Option<Tensor<B, 1>>,
    rows: Rows,
    eps: f64,
) -> Option<Tensor<B, D>> {
    let dtype = x.dtype();
    let param = |p: Option<Tensor<B, 1>>| p.map(|p| to_dtype(p, dtype).into_primitive().tensor());
    B::sd_norm(
        x.into_primitive().tensor(),
        param(gamma),
        param(beta),
        rows,
        eps,
    )
    .map(|out| Tensor::from_primitive(TensorPrimitive::Float(out)))
}

/// Burn's `LayerNorm::forward`, in f32 for a half-precision input (as [`group_norm`]).
///
/// # Shapes
/// `[..., C]` -> `[..., C]`.
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    if is_half(x.dtype()) || is_half(param_dtype(&norm.gamma)) {
        in_f32(x, |x| cast_module(norm.clone(), Precision::F32).forward(x))
    } else {
        norm.forward(x)
    }
}

/// Batch normalisation with the parameters and running statistics of `norm`: in `training`
/// mode with autodiff on, batch statistics (and a running-statistics update), as Burn's
/// `BatchNorm::forward` does; otherwise the running statistics. Burn decides by the backend
/// alone; the `training` flag also lets a differentiable pass run in inference mode (gradients
/// to the inputs of a trained model, as `explain`'s attributions take them), where Burn's module
/// would normalise with the statistics of the batch at hand.
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`.
pub fn batch_norm<B: Backend>(
    norm: &BatchNorm<B>,
    x: Tensor<B, 4>,
    training: bool,
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let (centred, var) = if training && B::ad_enabled(&device) {
        let per_channel_mean = |t: Tensor<B, 4>| -> Tensor<B, 1> {
            t.reshape([b, c, h * w])
                .mean_dim(2)
                .mean_dim(0)
                .reshape([c])
        };
        let mean = per_channel_mean(x.clone());
        let centred = x - per_sample_channel(mean.clone(), b);
        let var = per_channel_mean(centred.clone().square());
        let m = norm.momentum;
        let running_mean = norm.running_mean.value_sync().to_device(&device);
        let running_var = norm.running_var.value_sync().to_device(&device);
        norm.running_mean
            .update((running_mean.mul_scalar(1.0 - m) + mean.detach().mul_scalar(m)).detach());
        norm.running_var.update(
            (running_var.mul_scalar(1.0 - m) + var.clone().detach().mul_scalar(m)).detach(),
        );
        // Burn's running state keeps one pending update per thread and averages the pending
        // updates of all threads when one of them reads again. Folding this update in at once
        // leaves none pending, so the statistics are the same sequence of updates whichever
        // threads the passes run on: data-parallel workers that take their forwards in turn
        // (`diffris-experiments`' turnstile) update them exactly as one device does, pass after
        // pass. On one thread this is the fold the next pass's `value_sync` would do.
        let _ = norm.running_mean.value_sync();
        let _ = norm.running_var.value_sync();
        (centred, var)
    } else {
        let mean = norm.running_mean.value().to_device(&device);
        (
            x - per_sample_channel(mean, b),
            norm.running_var.value().to_device(&device),
        )
    };
    let normed = centred / per_sample_channel(var.add_scalar(norm.epsilon).sqrt(), b);
    affine(normed, norm.gamma.val(), norm.beta.val())
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::nn::{BatchNormConfig, GroupNormConfig};
    use burn::tensor::{Distribution, TensorData, Tolerance};

    use super::*;

    type Cpu = Flex;
    type Ad = Autodiff<Flex>;

    /// The same values on every call and backend, from a local generator: values in [-3.5, 4.5)
    /// (mean 0.5). Not Burn's generator: it is one per process and the tests run on parallel
    /// threads, so a seed-then-draw here could interleave with another test's draws and give two
    /// calls different data (seen: the inference comparison below failed once in 25 runs).
    fn perturbed_input<B: Backend>(device: &B::Device) -> Tensor<B, 4> {
        let mut state = 3u64;
        let values: Vec<f32> = (0..3 * 8 * 5 * 4)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 3.5
            })
            .collect();
        Tensor::from_data(TensorData::new(values, [3, 8, 5, 4]), device)
    }

    /// Against Burn's own module (the same arithmetic in a different layout): f32 sums in a
    /// different order, so a few ulps of the unit-scale outputs.
    #[test]
    fn group_norm_matches_burn_module() {
        let device = Default::default();
        let mut norm = GroupNormConfig::new(4, 8).init::<Cpu>(&device);
        norm.gamma = norm
            .gamma
            .map(|p| p.map(|g| g.random_like(Distribution::Normal(1.0, 0.5))));
        norm.beta = norm
            .beta
            .map(|p| p.map(|g| g.random_like(Distribution::Normal(0.0, 0.5))));
        let x = perturbed_input::<Cpu>(&device);
        group_norm(&norm, x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&norm.forward(x).into_data(), Tolerance::absolute(1e-5));
    }

    /// Training mode: batch statistics, gradients through them, and the running-statistics
    /// update all equal Burn's module; inference mode uses the running statistics.
    #[test]
    fn batch_norm_matches_burn_module_in_training_and_inference() {
        let device = Default::default();
        let ours = BatchNormConfig::new(8).init::<Ad>(&device);
        let burns = BatchNormConfig::new(8).init::<Ad>(&device);
        let x = perturbed_input::<Ad>(&device).require_grad();
        let y_ours = batch_norm(&ours, x.clone(), true);
        let y_burn = burns.forward(x.clone());
        y_ours
            .to_data()
            .assert_approx_eq::<f32>(&y_burn.to_data(), Tolerance::absolute(1e-5));
        let weights = Tensor::<Ad, 4>::random([3, 8, 5, 4], Distribution::Default, &device);
        let g_ours = (y_ours * weights.clone()).sum().backward();
        let g_burn = (y_burn * weights).sum().backward();
        x.grad(&g_ours)
            .unwrap()
            .into_data()
            .assert_approx_eq::<f32>(
                &x.grad(&g_burn).unwrap().into_data(),
                Tolerance::absolute(1e-5),
            );
        // Burn's module leaves its update pending (`value` is still the old statistics until a
        // `value_sync` folds it in); ours folds it in at once, so `value` is already the new one.
        for (a, b) in [
            (ours.running_mean.value(), burns.running_mean.value_sync()),
            (ours.running_var.value(), burns.running_var.value_sync()),
        ] {
            a.into_data()
                .assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(1e-6));
        }
        // Inference mode under autodiff: the running statistics, as the plain backend's
        // module uses them, and no update.
        let before = ours.running_mean.value().into_data();
        let x = perturbed_input::<Ad>(&device);
        let y_eval_ad = batch_norm(&ours, x.clone(), false);
        assert_eq!(ours.running_mean.value().into_data(), before, "no update");
        let ours = ours.valid();
        let burns = burns.valid();
        let x = perturbed_input::<Cpu>(&device);
        let y_eval = batch_norm(&ours, x.clone(), false);
        y_eval.clone().into_data().assert_approx_eq::<f32>(
            &burns.forward(x.clone()).into_data(),
            Tolerance::absolute(1e-5),
        );
        assert_eq!(y_eval_ad.into_data(), y_eval.into_data());
        // `training` on a backend without autodiff is still inference, as in Burn.
        assert_eq!(
            batch_norm(&ours, x.clone(), true).into_data(),
            batch_norm(&ours, x, false).into_data()
        );
    }
}
