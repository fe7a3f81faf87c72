//! SD's noise schedule against diffusers' own numbers (`tests/fixtures/schedule/ddpm.json`,
//! written by `tools/make_schedule_fixture.py` from `DDPMScheduler` and `DDIMScheduler` with an
//! SD-1.x scheduler config): the betas, the cumulative alphas, `add_noise` and a DDIM step.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use diffris_model::sd::NoiseSchedule;
use serde_json::Value;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/schedule/ddpm.json"
);

fn fixture() -> Value {
    serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn tensor(v: &Value, shape: [usize; 4]) -> Tensor<Flex, 4> {
    Tensor::from_data(TensorData::new(floats(v), shape), &Default::default())
}

fn shape(v: &Value) -> [usize; 4] {
    let s: Vec<usize> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    [s[0], s[1], s[2], s[3]]
}

/// `max |a - b| / max(1, max |b|)`.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f64, |m, x| m.max(x.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    diff / scale
}

#[test]
fn betas_and_cumulative_alphas_are_diffusers() {
    let f = fixture();
    let s = NoiseSchedule::sd();
    let (betas, abar) = (floats(&f["betas"]), floats(&f["alphas_cumprod"]));
    assert_eq!(betas.len(), 1000);
    // PyTorch's CPU linspace fills whole SIMD vectors from a base value by adding the step lane
    // by lane (`Vectorized::arange`), diffris computes `start + step * i`: the two round some
    // ramp values differently (with the committed fixture, 145 of the 1,000 betas differ, by at
    // most 3.1e-7 relative), and the cumulative product carries such differences along. 1e-6
    // relative bounds it and is far below anything a wrong formula (another schedule, an f64
    // ramp, an off-by-one) would give: those differ by 1e-3 or more.
    for (t, (got, want)) in s.betas.iter().zip(&betas).enumerate() {
        let r = ((got - want) / want).abs();
        assert!(r < 1e-6, "beta_{t}: {got} vs diffusers {want}");
    }
    for (t, (got, want)) in s.alphas_cumprod.iter().zip(&abar).enumerate() {
        let r = ((got - want) / want).abs();
        assert!(r < 1e-6, "alpha_bar_{t}: {got} vs diffusers {want}");
    }
}

#[test]
fn add_noise_is_diffusers() {
    let f = &fixture()["add_noise"];
    let sh = shape(&f["shape"]);
    let timesteps: Vec<usize> = f["timesteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as usize)
        .collect();
    let noisy =
        NoiseSchedule::sd().add_noise(tensor(&f["x0"], sh), tensor(&f["noise"], sh), &timesteps);
    let got = noisy.into_data().to_vec::<f32>().unwrap();
    // Two f32 products and a sum per value, from coefficients equal to diffusers' to the
    // schedule's 1e-6: 2e-6 of the values' scale.
    let r = rel(&got, &floats(&f["noisy"]));
    assert!(r < 2e-6, "add_noise differs by {r:e}");
}

#[test]
fn ddim_timesteps_and_steps_are_diffusers() {
    let f = &fixture()["ddim"];
    let s = NoiseSchedule::sd();
    for n in [10, 50] {
        let want: Vec<usize> = f["timesteps"][n.to_string()]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(s.ddim_timesteps(n), want, "{n} steps");
    }
    let sh = shape(&f["shape"]);
    let n = f["inference_steps"].as_u64().unwrap() as usize;
    for case in ["from_first", "from_last"] {
        let t = f[case]["t"].as_u64().unwrap() as usize;
        let out = s.ddim_step(tensor(&f["sample"], sh), tensor(&f["eps"], sh), t, n);
        let got = out.into_data().to_vec::<f32>().unwrap();
        // A handful of f32 operations on values of order one, one of them a division by
        // sqrt(alpha_bar_t) (about 0.07 at t = 901, which scales rounding by 14): 2e-5.
        let r = rel(&got, &floats(&f[case]["prev_sample"]));
        assert!(r < 2e-5, "DDIM step {case} (t = {t}) differs by {r:e}");
    }
}
