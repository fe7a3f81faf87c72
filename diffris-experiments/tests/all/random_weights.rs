//! The seeded random SD weights the tiny profile writes to its cache are a fixed function of
//! (architecture, seed, generator, [`RANDOM_WEIGHTS_VERSION`]): the cache folder is named after
//! those four, and a cached folder is reused whatever build finds it. This pins the weights
//! flex draws for the tiny architecture and seed 0, so a change to what is drawn (the modules'
//! initialisers, their order, Burn's generator) cannot reuse weights cached under the old name.
//! If this fails after a deliberate change, bump `RANDOM_WEIGHTS_VERSION` and update `PINNED`.

#![cfg(feature = "flex")] // runs on the CPU reference backend

use burn::backend::Flex;
use diffris_experiments::config::profile::tiny_arch;
use diffris_experiments::device::backend::{RANDOM_WEIGHTS_VERSION, weights_generator};
use diffris_experiments::diagnostics::step_probe::to_data;
use diffris_experiments::inputs::frozen::{load_frozen, random_sd_dir, write_random};
use diffris_experiments::util::cache::fnv1a;

/// FNV-1a over every tensor's path and f32 bits, in the module's order, of the tiny weights
/// flex writes for seed 0 at `RANDOM_WEIGHTS_VERSION` 1.
const PINNED: (u32, u64) = (1, 0x2e97_13d1_c4f9_79e4);

#[test]
fn random_weights_of_a_seed_are_those_of_this_version() {
    let _rng = crate::burn_rng();
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sd");
    write_random::<Flex>(&tiny_arch(), 0, &out, &device).unwrap();
    let (sd, _) = load_frozen::<Flex>(&out, None, &device).unwrap();
    let mut bytes = Vec::new();
    for (path, data) in to_data(&sd) {
        bytes.extend(path.bytes());
        bytes.push(0);
        for v in data.convert::<f32>().to_vec::<f32>().unwrap() {
            bytes.extend(v.to_bits().to_le_bytes());
        }
    }
    let digest = fnv1a(bytes);
    assert_eq!(
        (RANDOM_WEIGHTS_VERSION, digest),
        PINNED,
        "the random weights of a seed changed: bump RANDOM_WEIGHTS_VERSION (device/backend.rs) and pin \
         the new digest {digest:#018x}"
    );
}

#[test]
fn the_cache_names_the_generator_and_the_version_and_keeps_the_old_name_for_old_runs() {
    let _rng = crate::burn_rng();
    let cache = std::path::Path::new("/cache");
    let generator = weights_generator::<Flex>(&Default::default());
    assert_eq!(generator, format!("flex-Cpu-v{RANDOM_WEIGHTS_VERSION}"));
    let arch = tiny_arch();
    let dir = random_sd_dir(&arch, 7, Some(&generator), cache);
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.ends_with(&format!("-seed7-flex-Cpu-v{RANDOM_WEIGHTS_VERSION}")),
        "{name}"
    );
    // Runs from before the generator was recorded read the folder older builds wrote.
    let legacy = random_sd_dir(&arch, 7, None, cache);
    assert_eq!(
        legacy.file_name().unwrap().to_str().unwrap(),
        name.split("-flex").next().unwrap()
    );
    assert_eq!(dir.parent(), Some(cache.join("sd-random").as_path()));
}
