//! Strict checkpoint loading: a missing key, an unused key or a wrong shape is an error that
//! names the key (and both shapes); schedule buffers and the VAE decoder are skipped on purpose.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use diffris_model::sd::StableDiffusion;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

type B = Flex;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_tiny")
}

/// Rewrites the prefixed text encoder with `edit` applied to its (name -> (dtype, shape, bytes)) map.
fn edited_text_encoder(
    dir: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let bytes = std::fs::read(fixtures().join("text_encoder_prefixed_bf16.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut map: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView<'_>)> = map
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let out = dir.join("text_encoder.safetensors");
    std::fs::write(&out, safetensors::serialize(views, None).unwrap()).unwrap();
    out
}

fn load_error(path: &Path) -> String {
    let mut sd: StableDiffusion<B> =
        StableDiffusion::from_diffusers(&fixtures().join("diffusers"), &Default::default())
            .unwrap();
    sd.load_text_encoder_file(path).unwrap_err().to_string()
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = "text_model.final_layer_norm.weight";
    let path = edited_text_encoder(dir.path(), |m| {
        m.remove(key).unwrap();
    });
    let err = load_error(&path);
    assert!(err.contains("missing") && err.contains(key), "{err}");
}

#[test]
fn unused_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_text_encoder(dir.path(), |m| {
        m.insert(
            "text_model.extra_head.weight".into(),
            (Dtype::F32, vec![2], vec![0; 8]),
        );
    });
    let err = load_error(&path);
    assert!(
        err.contains("unused") && err.contains("text_model.extra_head.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shape_names_key_and_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let key = "text_model.encoder.layers.0.mlp.fc1.bias";
    let path = edited_text_encoder(dir.path(), |m| {
        let (d, shape, bytes) = m.remove(key).unwrap();
        let n = shape[0] - 1;
        m.insert(key.into(), (d, vec![n], bytes[..n * 2].to_vec()));
    });
    let err = load_error(&path);
    assert!(
        err.contains(key) && err.contains("[63]") && err.contains("[64]"),
        "{err}"
    );
}

#[test]
fn position_ids_buffer_is_skipped() {
    // The fixture carries `text_model.embeddings.position_ids` like real files: loading succeeds.
    let dir = tempfile::tempdir().unwrap();
    let path = edited_text_encoder(dir.path(), |m| {
        assert!(m.contains_key("text_model.embeddings.position_ids"));
    });
    let mut sd: StableDiffusion<B> =
        StableDiffusion::from_diffusers(&fixtures().join("diffusers"), &Default::default())
            .unwrap();
    sd.load_text_encoder_file(&path).unwrap();
}

#[test]
fn non_finite_weights_are_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "text_model.encoder.layers.0.mlp.fc1.bias";
    let path = edited_text_encoder(dir.path(), |m| {
        let (d, _, bytes) = m.get_mut(key).unwrap();
        assert_eq!(*d, Dtype::BF16);
        // bf16 NaN (0x7fc0), little-endian, in the fourth element.
        bytes[6..8].copy_from_slice(&0x7fc0u16.to_le_bytes());
    });
    let err = load_error(&path);
    assert!(
        err.contains(key) && err.contains("non-finite") && err.contains("index 3"),
        "{err}"
    );
}

#[test]
fn integer_weights_are_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "text_model.final_layer_norm.bias";
    let path = edited_text_encoder(dir.path(), |m| {
        let (d, shape, _) = m.remove(key).unwrap();
        assert_eq!(d, Dtype::BF16);
        let n: usize = shape.iter().product();
        m.insert(key.into(), (Dtype::I32, shape, vec![0; 4 * n]));
    });
    let err = load_error(&path);
    assert!(err.contains(key) && err.contains("I32"), "{err}");
}

/// A diffusers folder read as a named architecture must be of it: the tiny fixture read as
/// SD-1.5 is refused naming the fields that differ; read as the tiny architecture (or with none
/// named) it loads.
#[test]
fn a_folder_of_another_architecture_is_refused() {
    use diffris_model::sd::SdConfig;
    let dir = fixtures().join("diffusers");
    let device = Default::default();
    let Err(err) = StableDiffusion::<B>::load(&dir, Some(&SdConfig::sd15()), &device) else {
        panic!("the tiny folder is not SD-1.5")
    };
    let err = err.to_string();
    assert!(
        err.contains("another architecture than the one it is read as")
            && err.contains("unet.block_out_channels [")
            && err.contains("(expected [320,640,1280,1280])")
            && err.contains("clip.hidden_size"),
        "{err}"
    );
    assert!(err.contains("sd_tiny/diffusers"), "names the folder: {err}");
    let found = SdConfig::from_diffusers_dir(&dir).unwrap();
    StableDiffusion::<B>::load(&dir, Some(&found), &device).unwrap();
    StableDiffusion::<B>::load(&dir, None, &device).unwrap();
}
