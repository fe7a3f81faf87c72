//! SynthRS: expressions are unambiguous, the set is written in the RRSIS-D layout that the
//! real-data reader reads back exactly, and equal configs give identical bytes.

use diffris_data::DatasetFormat;
use diffris_data::rle::BinaryMask;
use diffris_data::synth::language::{Description, choose_descriptions};
use diffris_data::synth::scene::generate;
use diffris_data::synth::{SynthConfig, write};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn every_expression_picks_exactly_one_object() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut checked = 0;
    for n in 0..300 {
        let scene = generate(&mut rng, 128, 2 + n % 6, 1.0);
        for i in 0..scene.objects.len() {
            for d in choose_descriptions(&mut rng, &scene, i, 3) {
                // Read the text back with the parser, then count the objects it fits.
                let parsed = Description::parse(&d.text()).expect("generated text parses");
                assert_eq!(parsed, d);
                assert_eq!(
                    parsed.matching(&scene),
                    vec![i],
                    "{:?} in {:?}",
                    d.text(),
                    scene.objects
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} expressions checked");
}

#[test]
fn masks_are_exact_and_disjoint() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..50 {
        let scene = generate(&mut rng, 96, 6, 1.3);
        let mut union = BinaryMask::empty(96, 96);
        for m in &scene.masks {
            assert!(m.area() > 0, "every object is visible");
            assert!(
                m.data.iter().zip(&union.data).all(|(a, b)| !(*a && *b)),
                "objects do not overlap"
            );
            union.union_with(m);
        }
    }
}

fn small() -> SynthConfig {
    SynthConfig {
        image_size: 64,
        train: 30,
        val: 10,
        test: 12,
        seed: 5,
        ..SynthConfig::default()
    }
}

#[test]
fn written_set_reads_back_through_the_rrsisd_reader() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let summary = write(&out, &small()).unwrap();
    for (split, n) in [("train", 30), ("val", 10), ("test", 12)] {
        assert_eq!(summary.samples[split], n);
        let samples = DatasetFormat::Synthrs.read_split(&out, split).unwrap();
        assert_eq!(samples.len(), n, "{split}");
        for s in &samples {
            let mask = s.load_mask().unwrap();
            let img = s.load_image().unwrap();
            assert_eq!((mask.height, mask.width), (64, 64));
            assert_eq!((img.height(), img.width()), (64, 64));
            assert!(mask.area() > 0);
            assert!(Description::parse(&s.sentence).is_some(), "{}", s.sentence);
        }
    }
}

/// Like RefCOCO, `instances.json` annotates every object of an image, not only the referred
/// ones: each image has between `min_objects` and `max_objects` disjoint object masks, one of
/// which is each expression's ground truth.
#[test]
fn every_object_of_a_scene_is_annotated() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let cfg = small();
    write(&out, &cfg).unwrap();
    let objects = diffris_data::formats::rrsisd::image_annotations(&out).unwrap();
    for split in ["train", "val", "test"] {
        for s in DatasetFormat::Synthrs.read_split(&out, split).unwrap() {
            let masks: Vec<BinaryMask> = objects[&s.image]
                .iter()
                .map(|m| {
                    let probe = diffris_data::Sample {
                        mask: m.clone(),
                        ..s.clone()
                    };
                    probe.load_mask().unwrap()
                })
                .collect();
            assert!(
                (cfg.min_objects..=cfg.max_objects).contains(&masks.len()),
                "{} objects in {}",
                masks.len(),
                s.image.display()
            );
            let target = s.load_mask().unwrap();
            assert_eq!(masks.iter().filter(|m| m.data == target.data).count(), 1);
            for (i, a) in masks.iter().enumerate() {
                for b in &masks[i + 1..] {
                    assert!(!a.data.iter().zip(&b.data).any(|(x, y)| *x && *y));
                }
            }
        }
    }
}

#[test]
fn same_config_same_bytes_and_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write(&a, &small()).unwrap();
    write(&b, &small()).unwrap();
    for rel in [
        "rrsisd/refs(unc).p",
        "rrsisd/instances.json",
        "images/rrsisd/JPEGImages/00001.jpg",
    ] {
        assert_eq!(
            std::fs::read(a.join(rel)).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{rel}"
        );
    }
    // Writing over an existing directory is refused and leaves it untouched.
    let before = std::fs::read(a.join("rrsisd/instances.json")).unwrap();
    assert!(write(&a, &small()).is_err());
    assert_eq!(
        std::fs::read(a.join("rrsisd/instances.json")).unwrap(),
        before
    );
    // A bad config fails before anything is created.
    let bad = SynthConfig {
        min_objects: 0,
        ..small()
    };
    assert!(write(&dir.path().join("c"), &bad).is_err());
    assert!(!dir.path().join("c").exists());
}

/// Objects too large to place `min_objects` of them give an error naming the knobs, not an
/// endless loop or scenes with fewer objects than asked for.
#[test]
fn objects_that_cannot_fit_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        object_scale: 12.0,
        min_objects: 4,
        max_objects: 4,
        ..small()
    };
    let err = write(&dir.path().join("s"), &cfg).unwrap_err().to_string();
    assert!(
        err.contains("object_scale") && err.contains("min_objects"),
        "{err}"
    );
}

/// The cache names a SynthRS set after its config and `GENERATOR_VERSION` only, and reuses a
/// cached set whatever build finds it; this pins the bytes of one set at the current version, so
/// a change to what the generator writes cannot reuse sets cached under the old name. If this
/// fails after a deliberate change, bump `GENERATOR_VERSION` (synth/mod.rs) and update `PINNED`.
#[test]
fn the_written_set_is_pinned_to_the_generator_version() {
    const PINNED: (u32, u64) = (2, 0xe4da_f324_991c_4830);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    write(&root, &small()).unwrap();
    fn files(path: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    // 64-bit FNV-1a over each file's relative path and bytes.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for path in &all {
        let relative = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(path).unwrap();
        for &b in relative.as_bytes().iter().chain([0u8].iter()).chain(&bytes) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    assert_eq!(
        (diffris_data::synth::GENERATOR_VERSION, h),
        PINNED,
        "the SynthRS set for a config changed ({} files): bump GENERATOR_VERSION and pin the \
         new digest {h:#018x}",
        all.len()
    );
}

/// Temporary folders that interrupted writes of a cached set left behind (any process's) are
/// removed when the set is generated; other entries' are not touched.
#[test]
fn generating_a_cached_set_removes_its_stale_temporary_folders() {
    use diffris_data::synth::{cached_dir, ensure_cached};
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        train: 2,
        val: 1,
        test: 1,
        image_size: 32,
        ..SynthConfig::default()
    };
    let stem = cached_dir(dir.path(), &cfg)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let stale = dir.path().join(format!(".{stem}.partial-4242-0"));
    let other = dir.path().join(".another-set.partial-4242-0");
    for d in [&stale, &other] {
        std::fs::create_dir_all(d.join("images")).unwrap();
    }
    let (root, created) = ensure_cached(dir.path(), &cfg).unwrap();
    assert!(created && root.is_dir());
    assert!(!stale.exists(), "the stale folder of this set is gone");
    assert!(other.exists(), "another entry's is left");
}
