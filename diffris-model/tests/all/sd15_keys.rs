//! Full-size SD-1.5 key coverage without weights: the key names and shapes of a real SD-1.5
//! checkpoint (recorded by `tools/make_sd15_keys.py` from the full-size diffusers/transformers
//! models, in LDM and diffusers naming) against the `sd15()` modules' parameter shapes, both
//! ways, without allocating the 4 GB of weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use diffris_model::sd::config_json::read_json_object;
use diffris_model::sd::{ClipConfig, SdConfig, UNetConfig, VaeConfig};
use diffris_model::weights::keys::{Component, is_ignored_key};
use diffris_model::weights::{KeyLayout, verify_key_list};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15_keys")
}

fn key_list(name: &str) -> BTreeMap<String, Vec<usize>> {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    text.lines()
        .map(|line| {
            let mut parts = line.split('\t');
            let key = parts.next().unwrap().to_string();
            let _dtype = parts.next().unwrap();
            let shape = parts
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|d| d.parse().unwrap())
                .collect();
            (key, shape)
        })
        .collect()
}

#[test]
fn ldm_single_file_keys_cover_sd15_exactly() {
    let keys = key_list("ldm.txt");
    let used = verify_key_list::<Flex>(
        &SdConfig::sd15(),
        KeyLayout::SingleFile,
        &keys,
        &dir().join("ldm.txt"),
        &Default::default(),
    )
    .unwrap();
    // Everything but the schedule buffers, EMA scalars, position ids and the VAE decoder.
    let skipped = keys.keys().filter(|k| is_ignored_key(k)).count();
    assert_eq!(used + skipped, keys.len());
    assert!(
        keys.keys()
            .any(|k| k.starts_with("first_stage_model.decoder."))
    );
    // As many weights as the three diffusers files hold, minus their skipped keys.
    let diffusers: usize = [
        "diffusers_unet.txt",
        "diffusers_vae.txt",
        "diffusers_text_encoder.txt",
    ]
    .iter()
    .map(|f| key_list(f).keys().filter(|k| !is_ignored_key(k)).count())
    .sum();
    assert_eq!(used, diffusers);
}

#[test]
fn diffusers_keys_cover_sd15_exactly() {
    for (file, component) in [
        ("diffusers_unet.txt", Component::Unet),
        ("diffusers_vae.txt", Component::Vae),
        ("diffusers_text_encoder.txt", Component::Clip),
    ] {
        let keys = key_list(file);
        verify_key_list::<Flex>(
            &SdConfig::sd15(),
            KeyLayout::Diffusers(component),
            &keys,
            &dir().join(file),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn real_sd15_config_files_give_the_sd15_preset() {
    let read = |name: &str| read_json_object(&dir().join(name)).unwrap();
    let arch = SdConfig {
        unet: UNetConfig::from_diffusers_json(&read("unet_config.json"), Path::new("unet"))
            .unwrap(),
        vae: VaeConfig::from_diffusers_json(&read("vae_config.json"), Path::new("vae")).unwrap(),
        clip: ClipConfig::from_transformers_json(
            &read("text_encoder_config.json"),
            Path::new("te"),
        )
        .unwrap(),
    };
    assert_eq!(arch, SdConfig::sd15());
}

#[test]
fn a_key_of_the_wrong_shape_or_an_extra_key_is_caught() {
    let mut keys = key_list("ldm.txt");
    keys.insert("model.diffusion_model.out.2.bias".into(), vec![3]);
    let err = verify_key_list::<Flex>(
        &SdConfig::sd15(),
        KeyLayout::SingleFile,
        &keys,
        Path::new("x"),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("out.2.bias") && err.contains("[3]") && err.contains("[4]"),
        "{err}"
    );
    let mut keys = key_list("ldm.txt");
    keys.insert("model.diffusion_model.extra.weight".into(), vec![1]);
    let err = verify_key_list::<Flex>(
        &SdConfig::sd15(),
        KeyLayout::SingleFile,
        &keys,
        Path::new("x"),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unused") && err.contains("extra.weight"),
        "{err}"
    );
}
