//! Single-file checkpoints holding the UNet twice, trained (`model.diffusion_model.*`) and as its
//! exponential moving average (`model_ema.*`, LDM's `LitEma` naming: the name below `model.`
//! without dots): the EMA set is read by default, the other on request, each load says which,
//! and a file with one set says nothing.
//!
//! The fixture is the tiny LDM checkpoint with an EMA set added whose every value is the
//! trained value negated (the sign bit flipped), so which set was read is visible in any weight.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use diffris_model::sd::{SdConfig, StableDiffusion};
use diffris_model::weights::{UnetWeights, ema_key};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = Flex;

fn ldm_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_tiny/ldm/model.safetensors")
}

/// The fixture with a negated EMA copy of every UNet tensor (all but `skip`).
fn full_ema(dir: &Path, skip: Option<&str>) -> PathBuf {
    let bytes = std::fs::read(ldm_fixture()).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, v) in st.tensors() {
        if let Some(rest) = name.strip_prefix("model.diffusion_model.") {
            assert_eq!(v.dtype(), Dtype::F16, "the fixture's UNet is f16");
            let ema = ema_key(&name);
            assert_eq!(
                ema,
                format!("model_ema.diffusion_model{}", rest.replace('.', ""))
            );
            if Some(ema.as_str()) != skip {
                // f16 little-endian: the sign is the top bit of each value's second byte.
                let mut negated = v.data().to_vec();
                for pair in negated.chunks_mut(2) {
                    pair[1] ^= 0x80;
                }
                tensors.push((ema, v.dtype(), v.shape().to_vec(), negated));
            }
        }
        tensors.push((name, v.dtype(), v.shape().to_vec(), v.data().to_vec()));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let out = dir.join("full-ema.safetensors");
    std::fs::write(&out, safetensors::serialize(views, None).unwrap()).unwrap();
    out
}

/// The first values of the UNet's `conv_in` weight and of the VAE's first conv.
fn probe(sd: &StableDiffusion<B>) -> (Vec<f32>, Vec<f32>) {
    let first = |t: burn::tensor::Tensor<B, 4>| -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()[..16].to_vec()
    };
    (
        first(sd.unet.conv_in.weight.val()),
        first(sd.vae.encoder.conv_in.weight.val()),
    )
}

/// The fixture's architecture, as its diffusers twin's config.json files give it.
fn arch() -> SdConfig {
    SdConfig::from_diffusers_dir(
        &ldm_fixture()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("diffusers"),
    )
    .unwrap()
}

fn load(path: &Path, unet: UnetWeights) -> (StableDiffusion<B>, Option<UnetWeights>) {
    let arch = arch();
    StableDiffusion::<B>::load_with(path, Some(&arch), unet, &Default::default()).unwrap()
}

#[test]
fn the_ema_unet_is_read_by_default_and_the_other_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let ema_file = full_ema(dir.path(), None);
    let (plain, said) = load(&ldm_fixture(), UnetWeights::Ema);
    assert_eq!(said, None, "a file with one set has no choice to report");
    let (unet, vae) = probe(&plain);
    assert!(unet.iter().any(|v| *v != 0.0));

    let (ema, said) = load(&ema_file, UnetWeights::Ema);
    assert_eq!(said, Some(UnetWeights::Ema));
    let (ema_unet, ema_vae) = probe(&ema);
    let negated: Vec<f32> = unet.iter().map(|v| -v).collect();
    assert_eq!(ema_unet, negated, "the EMA set (the negated copy) was read");
    assert_eq!(ema_vae, vae, "the VAE has one set");

    let (non_ema, said) = load(&ema_file, UnetWeights::NonEma);
    assert_eq!(said, Some(UnetWeights::NonEma));
    assert_eq!(probe(&non_ema), (unet, vae));

    // `load` is the EMA default.
    let arch = arch();
    let default = StableDiffusion::<B>::load(&ema_file, Some(&arch), &Default::default()).unwrap();
    assert_eq!(probe(&default).0, negated);
}

#[test]
fn an_ema_set_missing_a_tensor_is_an_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = "model_ema.diffusion_modelout2bias";
    let file = full_ema(dir.path(), Some(missing));
    let arch = arch();
    let Err(err) = StableDiffusion::<B>::load(&file, Some(&arch), &Default::default()) else {
        panic!("an EMA set without one of its tensors is refused");
    };
    let err = err.to_string();
    assert!(err.contains(missing), "{err}");
    // The trained set is whole and still loads.
    load(&file, UnetWeights::NonEma);
}
