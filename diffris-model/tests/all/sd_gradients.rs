//! The frozen UNet stays differentiable: with `no_grad()` weights, the gradient still reaches the
//! context (and so the CP-adapter), matches central finite differences, and no weight gets one.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use diffris_model::sd::{SdConfig, UNetRequest};

type AB = Autodiff<Flex>;

#[test]
fn context_gradient_matches_finite_differences_and_weights_get_none() {
    let _rng = crate::burn_rng();
    let device = Default::default();
    AB::seed(&device, 7);
    let unet = SdConfig::tiny().unet.init::<AB>(&device).no_grad();
    let latent = Tensor::<AB, 4>::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let context = Tensor::<AB, 3>::random([1, 77, 32], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<AB, 1>::from_floats([1.0], &device);
    let request = UNetRequest::default();
    let probe = unet
        .forward(latent.clone(), t.clone(), context.clone(), request)
        .taps[0]
        .clone();
    let weights = Tensor::<AB, 4>::random(probe.dims(), Distribution::Normal(0.0, 1.0), &device);
    // A scalar of the finest tap (what the decoder reads).
    let tap =
        |ctx: Tensor<AB, 3>| unet.forward(latent.clone(), t.clone(), ctx, request).taps[0].clone();
    let objective = |ctx: Tensor<AB, 3>| -> Tensor<AB, 1> { (tap(ctx) * weights.clone()).sum() };

    let ctx = context.clone().require_grad();
    let mut grads = objective(ctx.clone()).backward();
    let analytic = ctx.grad(&grads).expect("gradient reaches the context");
    let total: f32 = analytic.clone().abs().sum().into_scalar();
    assert!(total > 0.0, "the context gradient is nonzero");
    let frozen = GradientsParams::from_module(&mut grads, &unet);
    assert_eq!(frozen.len(), 0, "no frozen weight receives a gradient");

    let analytic: Vec<f32> = analytic.into_data().to_vec().unwrap();
    let base: Vec<f32> = context.clone().into_data().to_vec().unwrap();
    // f32 rounding of the taps (~1e-6 relative, summed over 2,048 weighted entries) makes
    // differences below eps ~ 3e-2 noisy; the function is smooth enough that eps = 0.1 agrees
    // with the analytic gradient to ~1e-3 relative (checked across eps from 1e-1 to 1e-3).
    let eps = 1e-1f32;
    // A few entries spread over tokens and channels, including the largest gradient.
    let largest = (0..analytic.len())
        .max_by(|&a, &b| analytic[a].abs().total_cmp(&analytic[b].abs()))
        .unwrap();
    for idx in [largest, 5, 32 * 3 + 7, 32 * 40 + 31, 32 * 76] {
        let shifted = |delta: f32| {
            let mut v = base.clone();
            v[idx] += delta;
            tap(Tensor::<AB, 3>::from_data(
                burn::tensor::TensorData::new(v, [1, 77, 32]),
                &device,
            ))
        };
        // Difference the taps before the weighted sum, so the rounding of the large sum does
        // not swamp the small change.
        let fd = ((shifted(eps) - shifted(-eps)) * weights.clone())
            .sum()
            .into_scalar() as f64
            / (2.0 * eps as f64);
        let a = analytic[idx] as f64;
        let tol = 2e-2 * a.abs() + 1e-3;
        assert!(
            (fd - a).abs() <= tol,
            "entry {idx}: analytic {a:e}, finite difference {fd:e}"
        );
    }
}
