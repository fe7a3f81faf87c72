//! A training epoch over an encoded split does not hold the split: 2,000 samples at 512 px with
//! SD-1.5's latent and text sizes (1.1 GB on disk, 2.6 GB as the f32 arrays an earlier revision
//! held) are read a batch at a time from the cache file. Alone in its test binary so that the
//! process's peak resident memory is this test's.

#![cfg(all(feature = "flex", target_os = "linux"))]

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::Flex;
use burn::data::dataloader::DataLoader;
use diffris_data::{MaskSource, Sample};
use diffris_experiments::inputs::encoded_cache::{self, EncodedRows, Layout, Writer};
use diffris_experiments::training::loader::EpochLoader;
use diffris_experiments::util::progress::peak_rss_bytes;
use safetensors::Dtype;

const SAMPLES: usize = 2_000;
const SIZE: usize = 512;
const LATENT: [usize; 3] = [4, SIZE / 8, SIZE / 8];
const TEXT: [usize; 2] = [77, 768];

/// Resets the process's peak resident memory to its current value (Linux 4.0+).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
}

#[test]
fn an_epoch_reads_the_split_a_batch_at_a_time() {
    // In cargo's scratch folder under the target directory, on the build's disk (`/tmp` may be
    // a small RAM disk).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("split.safetensors");
    let layout = Layout {
        samples: SAMPLES,
        image_size: (SIZE, SIZE),
        latent: (Dtype::F32, LATENT),
        text: (Dtype::F32, TEXT),
    };
    let writer = Writer::create(&path, "rss", layout).unwrap();
    // Rows written 20 at a time, as the encoders write them; every sample alike but its eos.
    let chunk = 20;
    let latent: Vec<u8> = (0..LATENT.iter().product::<usize>())
        .flat_map(|i| ((i % 97) as f32 * 0.01).to_le_bytes())
        .collect();
    let text: Vec<u8> = (0..TEXT.iter().product::<usize>())
        .flat_map(|i| ((i % 89) as f32 * -0.02).to_le_bytes())
        .collect();
    let mask: Vec<u8> = (0..SIZE * SIZE)
        .map(|i| (i % SIZE < SIZE / 3) as u8)
        .collect();
    let mut rows = EncodedRows {
        latents: latent.repeat(chunk),
        text: text.repeat(chunk),
        eos: vec![],
        masks: mask.repeat(chunk),
    };
    for first in (0..SAMPLES).step_by(chunk) {
        rows.eos = (first..first + chunk).map(|i| (i % 77) as i64).collect();
        writer.write(first, &rows).unwrap();
    }
    writer.finish().unwrap();
    drop(rows);
    let file_bytes = std::fs::metadata(&path).unwrap().len();
    assert!(file_bytes > 1_100_000_000, "{file_bytes} bytes");

    let samples: Vec<Sample> = (0..SAMPLES)
        .map(|i| Sample {
            id: format!("s{i}"),
            image: PathBuf::from(format!("{i}.png")),
            mask: MaskSource::File {
                path: PathBuf::from(format!("{i}-mask.png")),
                threshold: 127,
            },
            sentence: "the object".into(),
            category: None,
            origin: PathBuf::from("refs"),
        })
        .collect();
    reset_peak();
    let before = peak_rss_bytes().unwrap();
    let split = encoded_cache::load(&path, "rss", samples, (SIZE, SIZE))
        .unwrap()
        .unwrap();
    assert!(split.latents.on_disk() && split.text.on_disk() && split.masks.on_disk());
    // One shuffled training epoch of batches of 8, each built into tensors as training does.
    let loader = EpochLoader::<Flex>::new(Arc::new(split), 8, 8, Some(3), 0, Default::default());
    let mut seen = vec![false; SAMPLES];
    let mut foreground = 0f64;
    for batch in loader.iter() {
        assert_eq!(batch.mask.dims()[1..], [1, SIZE, SIZE]);
        foreground += batch.mask.sum().into_scalar() as f64;
        for &i in &batch.indices {
            assert!(!seen[i], "sample {i} twice in one epoch");
            seen[i] = true;
        }
        let eos: Vec<i64> = batch.eos.into_data().iter::<i64>().collect();
        let expected: Vec<i64> = batch.indices.iter().map(|&i| (i % 77) as i64).collect();
        assert_eq!(eos, expected, "rows read at their samples' places");
    }
    assert!(seen.iter().all(|&s| s), "every sample once");
    // A third of every mask's columns is foreground: the masks were read, not zeros.
    let expected = (SAMPLES * SIZE * (SIZE / 3)) as f64;
    assert_eq!(foreground, expected);
    let peak = peak_rss_bytes().unwrap();
    // One batch is 8 x 2.2 MiB (f32 mask, text, latent) held a few times over (rows, tensor
    // data, the mask sum), the load's check reads 64 rows at a time (36 MiB), and the process
    // held `before` when it started. 160 MiB over that bound is far below the file (1.1 GB): a process
    // that held the split, even as bytes, would exceed it by a factor of 7.
    let bound = 160 << 20;
    let grown = peak.saturating_sub(before);
    eprintln!("the epoch raised the peak RSS by {} MiB", grown >> 20);
    assert!(
        peak < before + bound,
        "an epoch over a {file_bytes}-byte split raised the peak RSS by {} MiB (bound {} MiB; \
         before {} MiB)",
        grown >> 20,
        bound >> 20,
        before >> 20
    );
}
