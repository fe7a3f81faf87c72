//! Encoding a split on several threads gives exactly the numbers of one thread: each thread
//! encodes whole batches, the same batches either way, and the parts are joined in order.

#![cfg(feature = "flex")] // runs on the CPU reference backend

use burn::backend::Flex;
use diffris_data::synth::{self, SynthConfig};
use diffris_data::{ClipTokenizer, DatasetFormat};
use diffris_experiments::config::profile::{tiny_arch, tiny_synth};
use diffris_experiments::inputs::frozen::{load_frozen, write_random};
use diffris_experiments::inputs::split::EncodedSplit;
use diffris_model::sd::StableDiffusion;
use indicatif::ProgressBar;

/// A SynthRS set of `train` training samples and random tiny SD weights (seed 7), in a temporary
/// folder: the folder, the training samples, the frozen stack, its tokenizer and the input size.
fn fixture(
    train: usize,
) -> (
    tempfile::TempDir,
    Vec<diffris_data::Sample>,
    StableDiffusion<Flex>,
    ClipTokenizer,
    (usize, usize),
) {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        train,
        val: 1,
        test: 1,
        ..tiny_synth()
    };
    let root = dir.path().join("synthrs");
    synth::write(&root, &cfg).unwrap();
    let samples = DatasetFormat::Synthrs.read_split(&root, "train").unwrap();
    assert_eq!(samples.len(), train);
    let weights = dir.path().join("sd");
    write_random::<Flex>(&tiny_arch(), 7, &weights, &device).unwrap();
    let (sd, tokenizer) = load_frozen::<Flex>(&weights, Some(&tiny_arch()), &device).unwrap();
    (
        dir,
        samples,
        sd,
        tokenizer,
        (cfg.image_size, cfg.image_size),
    )
}

#[test]
fn threads_split_the_batches_without_changing_a_number() {
    let _rng = crate::burn_rng();
    let device = Default::default();
    let (dir, samples, sd, tokenizer, size) = fixture(16);
    let encode = |threads: usize| {
        let bar = ProgressBar::hidden();
        let out = dir.path().join(format!("encoded-{threads}.safetensors"));
        let enc = EncodedSplit::encode(
            samples.clone(),
            &tokenizer,
            &sd,
            size,
            2.0,
            &device,
            3,
            threads,
            &bar,
            &out,
            "key",
        )
        .unwrap();
        assert_eq!(bar.position(), 16, "every sample counted once");
        enc
    };
    let one = encode(1);
    // 16 samples in batches of 3 are 6 batches, the last of one sample: two per thread.
    let three = encode(3);
    assert_eq!(one.len(), 16);
    assert_eq!(one.latent_dims, [32, 16, 16]);
    let all = |rows: &diffris_experiments::inputs::rows::Rows| rows.all(16).unwrap();
    assert_eq!(all(&one.latents).len(), 16 * 32 * 16 * 16);
    assert_eq!(
        all(&one.text).len(),
        16 * one.text_dims[0] * one.text_dims[1]
    );
    assert_eq!(all(&one.masks).len(), 16 * 64 * 64);
    assert!(
        one.latents.on_disk(),
        "the encoding is read back from its file"
    );
    assert_eq!(three.latent_dims, one.latent_dims);
    assert_eq!(three.text_dims, one.text_dims);
    assert_eq!(three.eos, one.eos);
    assert_eq!(all(&three.masks), all(&one.masks));
    assert!(all(&three.latents) == all(&one.latents), "latents differ");
    assert!(all(&three.text) == all(&one.text), "text states differ");
    // The files are the same byte for byte (the key and every row).
    assert!(
        std::fs::read(dir.path().join("encoded-1.safetensors")).unwrap()
            == std::fs::read(dir.path().join("encoded-3.safetensors")).unwrap()
    );
    let ids = |e: &EncodedSplit| e.samples.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&three), ids(&one));
}

/// At half precision the text states are stored at the text encoder's precision (2 bytes each)
/// and read back as exactly the f32 states the model computes (`encode_text`); latents, scaled
/// in f32, stay f32.
#[test]
fn half_precision_text_states_are_stored_at_their_precision() {
    let _rng = crate::burn_rng();
    use burn::data::dataloader::batcher::Batcher;
    use diffris_data::batch::{RisBatch, RisBatcher, prepare_all};
    use diffris_model::diffris::encode_text;
    use diffris_model::precision::{Precision, cast_module};
    use safetensors::Dtype;

    let device = Default::default();
    let (dir, samples, sd, tokenizer, size) = fixture(4);
    let sd = cast_module(sd, Precision::Bf16);
    let enc = EncodedSplit::encode(
        samples.clone(),
        &tokenizer,
        &sd,
        size,
        2.0,
        &device,
        4,
        1,
        &ProgressBar::hidden(),
        &dir.path().join("bf16.safetensors"),
        "key",
    )
    .unwrap();
    assert_eq!(enc.text.dtype(), Dtype::BF16);
    assert_eq!(enc.latents.dtype(), Dtype::F32);
    let items = prepare_all(&samples, &[0, 1, 2, 3], &tokenizer, size, 1).unwrap();
    let batch: RisBatch<Flex> = RisBatcher.batch(items, &device);
    let expected: Vec<f32> = encode_text(&sd.text_encoder, batch.ids)
        .into_data()
        .iter::<f32>()
        .collect();
    let stored = enc.batch::<Flex>(&[0, 1, 2, 3], &device).text;
    let stored: Vec<f32> = stored.into_data().iter::<f32>().collect();
    assert!(
        stored == expected,
        "the stored states are not encode_text's"
    );
}
