//! What an encoded split was computed from, beyond its configuration: the files it read. A
//! user's dataset or weights can change under the same path, so the on-disk encoding of a split
//! is keyed by these fingerprints too, and a changed file makes a new one.
//!
//! A file counts by its path, size and modification time (not its bytes: reading 20,000
//! images to hash them would cost what encoding saves); a split also by every sample's
//! identity, sentence, category and mask as read (a COCO annotation's polygons or run lengths,
//! or a mask file's path and threshold), and by the files the samples were read from (the
//! annotation files).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use diffris_data::{MaskSource, Sample};

use crate::util::cache::fnv1a;

/// `path`'s size and modification time (nanoseconds since the epoch), or an error naming it.
fn stamp(path: &Path) -> anyhow::Result<(u64, u128)> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((meta.len(), modified))
}

/// Appends `path` with its [`stamp`] to `text`.
fn push_file(text: &mut String, path: &Path) -> anyhow::Result<()> {
    let (len, modified) = stamp(path)?;
    let _ = writeln!(text, "{}\t{len}\t{modified}", path.display());
    Ok(())
}

/// The fingerprint of a split's samples: every sample's identity, text and mask, the stamp of
/// every image and mask file, and of every annotation file they came from.
pub fn samples(samples: &[Sample]) -> anyhow::Result<u64> {
    let mut text = String::new();
    let mut origins = BTreeSet::new();
    for s in samples {
        let _ = writeln!(text, "{}\t{}\t{:?}", s.id, s.sentence, s.category);
        push_file(&mut text, &s.image)?;
        match &s.mask {
            MaskSource::File { path, threshold } => {
                let _ = writeln!(text, "mask > {threshold}");
                push_file(&mut text, path)?;
            }
            coco @ MaskSource::Coco { .. } => {
                let _ = writeln!(text, "{coco:?}");
            }
        }
        // The annotation file the sample was read from (RRSIS-D's refs, a phrase file).
        if s.origin.is_file() {
            origins.insert(s.origin.clone());
        }
    }
    for origin in &origins {
        push_file(&mut text, origin)?;
    }
    Ok(fnv1a(text.bytes()))
}

/// The fingerprint of SD weights: a file's stamp, or the stamps of every file under a folder
/// (a diffusers folder; random weights in the cache), in path order.
pub fn weights(path: &Path) -> anyhow::Result<u64> {
    let mut files = vec![];
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for entry in
                std::fs::read_dir(&p).with_context(|| format!("reading {}", p.display()))?
            {
                stack.push(entry?.path());
            }
        } else {
            files.push(p);
        }
    }
    files.sort();
    let mut text = String::new();
    for f in &files {
        push_file(&mut text, f)?;
    }
    Ok(fnv1a(text.bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path, sentence: &str) -> Sample {
        Sample {
            id: "ref 1".into(),
            image: dir.join("a.png"),
            mask: MaskSource::File {
                path: dir.join("m.png"),
                threshold: 127,
            },
            sentence: sentence.into(),
            category: None,
            origin: dir.join("refs.txt"),
        }
    }

    fn write(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    /// Set a file's modification time `secs` seconds after the epoch.
    fn touch(path: &Path, secs: u64) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_changed_file_or_sample_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["a.png", "m.png", "refs.txt"] {
            write(&d.join(f), b"x");
            touch(&d.join(f), 1_000);
        }
        let base = samples(&[sample(d, "the red car")]).unwrap();
        assert_eq!(base, samples(&[sample(d, "the red car")]).unwrap());
        assert_ne!(base, samples(&[sample(d, "the blue car")]).unwrap());
        // The annotation file, named by the sample's origin, counts by its stamp.
        touch(&d.join("refs.txt"), 2_000);
        let touched = samples(&[sample(d, "the red car")]).unwrap();
        assert_ne!(base, touched);
        // The image too, by its size.
        write(&d.join("a.png"), b"xy");
        touch(&d.join("a.png"), 1_000);
        assert_ne!(touched, samples(&[sample(d, "the red car")]).unwrap());
        // A missing image is an error naming it.
        std::fs::remove_file(d.join("a.png")).unwrap();
        let err = samples(&[sample(d, "the red car")]).unwrap_err();
        assert!(format!("{err:#}").contains("a.png"), "{err:#}");
    }

    #[test]
    fn weights_count_every_file_of_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("unet")).unwrap();
        write(&d.join("unet/w.safetensors"), b"abc");
        write(&d.join("model_index.json"), b"{}");
        let base = weights(d).unwrap();
        assert_eq!(base, weights(d).unwrap());
        write(&d.join("unet/w.safetensors"), b"abcd");
        assert_ne!(base, weights(d).unwrap());
        let file = weights(&d.join("model_index.json")).unwrap();
        assert_ne!(file, weights(d).unwrap());
    }
}
