//! A saved diffusers-style folder loads back into identical components.

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use diffris_model::sd::{SdConfig, StableDiffusion, UNetRequest};

type B = Flex;

#[test]
fn save_then_load_gives_identical_outputs() {
    let _rng = crate::burn_rng();
    let device = Default::default();
    B::seed(&device, 3);
    let sd: StableDiffusion<B> = SdConfig::tiny().init(&device);
    let dir = tempfile::tempdir().unwrap();
    sd.save_diffusers(dir.path()).unwrap();
    let back: StableDiffusion<B> = StableDiffusion::load(dir.path(), None, &device).unwrap();
    assert_eq!(back.config(), sd.config());

    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(
            (0..77).map(|i| (i * 613) % 49408).collect::<Vec<i64>>(),
            [1, 77],
        ),
        &device,
    );
    let a: Vec<f32> = sd
        .text_encoder
        .forward(ids.clone())
        .into_data()
        .to_vec()
        .unwrap();
    let b: Vec<f32> = back.text_encoder.forward(ids).into_data().to_vec().unwrap();
    assert_eq!(a, b);
    let img = Tensor::<B, 4>::random([1, 3, 64, 64], Distribution::Uniform(-1.0, 1.0), &device);
    let a: Vec<f32> = sd.vae.forward(img.clone()).into_data().to_vec().unwrap();
    let b: Vec<f32> = back.vae.forward(img).into_data().to_vec().unwrap();
    assert_eq!(a, b);
    let z = Tensor::<B, 4>::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let ctx = Tensor::<B, 3>::random([1, 77, 32], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<B, 1>::from_floats([1.0], &device);
    let req = UNetRequest {
        sample: true,
        ..Default::default()
    };
    let a: Vec<f32> = sd
        .unet
        .forward(z.clone(), t.clone(), ctx.clone(), req)
        .sample
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let b: Vec<f32> = back
        .unet
        .forward(z, t, ctx, req)
        .sample
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(a, b);
}
