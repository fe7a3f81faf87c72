//! The VAE decoder against diffusers' `AutoencoderKL.decode` on the tiny fixture
//! (`tests/fixtures/sd_tiny/vae_decoder.safetensors`, made by
//! `tools/make_vae_decoder_fixture.py`), loaded from the diffusers folder and from the single-file
//! LDM checkpoint; and its strict loading.
//!
//! Tolerance: `max|a - b| <= 1e-4 * max(1, max|ref|)`, as the other parity tests (fp32
//! reimplementations of one graph differ by reduction order, ~1e-6 here; a wrong op shows at
//! 1e-2 and above).

use std::path::Path;

use crate::common::{Reference, assert_close, diffusers_arch, fixtures};
use burn::backend::Flex;
use diffris_model::sd::VaeDecoder;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

type B = Flex;

#[test]
fn the_decoder_matches_diffusers_from_both_checkpoint_forms() {
    let r = Reference::load_file("vae_decoder.safetensors");
    let device = Default::default();
    let folder = VaeDecoder::<B>::load(&fixtures().join("diffusers"), None, &device).unwrap();
    assert_close(
        "diffusers folder",
        folder.forward(r.float("latent")),
        r.float("image"),
    );
    let arch = diffusers_arch();
    let single = VaeDecoder::<B>::load(
        &fixtures().join("ldm/model.safetensors"),
        Some(&arch),
        &device,
    )
    .unwrap();
    assert_close(
        "single file",
        single.forward(r.float("latent")),
        r.float("image"),
    );
    assert_eq!(folder.config(), &arch.vae);
}

/// The LDM fixture without `drop`, with `extra` added (a copy of another decoder tensor).
fn edited_ldm(dir: &Path, drop: Option<&str>, extra: Option<(&str, &str)>) -> std::path::PathBuf {
    let bytes = std::fs::read(fixtures().join("ldm/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| Some(n.as_str()) != drop)
        .collect();
    if let Some((name, like)) = extra {
        let v = st.tensor(like).unwrap();
        views.push((name.to_string(), v));
    }
    let out = dir.join("model.safetensors");
    std::fs::write(&out, safetensors::serialize(views, None).unwrap()).unwrap();
    out
}

#[test]
fn a_missing_or_unused_decoder_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let arch = diffusers_arch();
    let device = Default::default();
    // diffusers' up_blocks.0 (the first after the mid block) is LDM's last `up` entry.
    let missing = "first_stage_model.decoder.up.3.block.0.conv1.weight";
    let file = edited_ldm(dir.path(), Some(missing), None);
    let err = VaeDecoder::<B>::load(&file, Some(&arch), &device)
        .err()
        .map(|e| e.to_string())
        .unwrap();
    assert!(err.contains(missing), "{err}");
    let unused = "first_stage_model.decoder.up.3.block.9.conv1.weight";
    let file = edited_ldm(
        dir.path(),
        None,
        Some((
            unused,
            "first_stage_model.decoder.up.3.block.0.conv1.weight",
        )),
    );
    let err = VaeDecoder::<B>::load(&file, Some(&arch), &device)
        .err()
        .map(|e| e.to_string())
        .unwrap();
    assert!(err.contains(unused), "{err}");
}
