//! Encoding a split on several threads gives exactly the numbers of one thread: each thread
//! encodes whole batches, the same batches either way, and the parts are joined in order.

#![cfg(feature = "flex")] // runs on the CPU reference backend

use burn::backend::Flex;
use diffris_data::DatasetFormat;
use diffris_data::synth::{self, SynthConfig};
use diffris_experiments::encoded::EncodedSplit;
use diffris_experiments::frozen::{load_frozen, write_random};
use diffris_experiments::profile::{tiny_arch, tiny_synth};
use indicatif::ProgressBar;

#[test]
fn threads_split_the_batches_without_changing_a_number() {
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        train: 16,
        val: 4,
        test: 4,
        ..tiny_synth()
    };
    let root = dir.path().join("synthrs");
    synth::write(&root, &cfg).unwrap();
    let samples = DatasetFormat::Synthrs.read_split(&root, "train").unwrap();
    assert_eq!(samples.len(), 16);
    let weights = dir.path().join("sd");
    write_random::<Flex>(&tiny_arch(), 7, &weights, &device).unwrap();
    let (sd, tokenizer) = load_frozen::<Flex>(&weights, Some(&tiny_arch()), &device).unwrap();
    let size = (cfg.image_size, cfg.image_size);
    let encode = |threads| {
        let bar = ProgressBar::hidden();
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
    assert_eq!(one.latents.len(), 16 * 32 * 16 * 16);
    assert_eq!(one.text.len(), 16 * one.text_dims[0] * one.text_dims[1]);
    assert_eq!(one.masks.len(), 16 * 64 * 64);
    assert_eq!(three.latent_dims, one.latent_dims);
    assert_eq!(three.text_dims, one.text_dims);
    assert_eq!(three.eos, one.eos);
    assert_eq!(three.masks, one.masks);
    assert!(three.latents == one.latents, "latents differ");
    assert!(three.text == one.text, "text states differ");
    let ids = |e: &EncodedSplit| e.samples.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&three), ids(&one));
}
