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

/// With a decoder the VAE folder holds both halves: the stack and the decoder load back from it
/// identical (a seeded random decoder decodes a latent to the same values), and the stack's
/// loader still builds no decoder from it.
#[test]
fn a_saved_decoder_loads_back_beside_the_encoder() {
    use diffris_model::sd::VaeDecoder;
    let _rng = crate::burn_rng();
    let device = Default::default();
    B::seed(&device, 5);
    let sd: StableDiffusion<B> = SdConfig::tiny().init(&device);
    let decoder: VaeDecoder<B> = SdConfig::tiny().vae.init_decoder(&device);
    let dir = tempfile::tempdir().unwrap();
    sd.save_diffusers_with_decoder(&decoder, dir.path())
        .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("vae/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["up_block_types"][0], "UpDecoderBlock2D");
    let back = VaeDecoder::<B>::load(dir.path(), None, &device).unwrap();
    let stack: StableDiffusion<B> = StableDiffusion::load(dir.path(), None, &device).unwrap();
    assert_eq!(stack.config(), sd.config());
    let z = Tensor::<B, 4>::random([1, 4, 4, 6], Distribution::Normal(0.0, 1.0), &device);
    let a: Vec<f32> = decoder.forward(z.clone()).into_data().to_vec().unwrap();
    let b: Vec<f32> = back.forward(z).into_data().to_vec().unwrap();
    assert_eq!(a, b);
    // A decoder of another width is refused.
    let mut other = SdConfig::tiny().vae;
    other.block_out_channels = vec![32, 32, 32, 32];
    let wrong: VaeDecoder<B> = other.init_decoder(&device);
    assert!(sd.save_diffusers_with_decoder(&wrong, dir.path()).is_err());
}
