//! A split's encoder outputs on disk, under a key naming the configuration, what computed them
//! and the files they were computed from (`inputs::split_key`, [`crate::fingerprint`]): the
//! parent of `ablation --jobs N` encodes each split once and its runs, each in its own process,
//! read the file, as do later runs of the same data and weights (a resumed run, another seed or
//! variant), instead of encoding the split again. Masks are stored as one byte per pixel (they
//! are 0 or 1), a quarter of their f32 size.

use std::path::{Path, PathBuf};

use anyhow::Context;
use diffris_data::Sample;
use safetensors::{Dtype, SafeTensors};

use crate::cache::fnv1a;
use crate::encoded::EncodedSplit;
use crate::tensor_file::TensorFile;

/// The file layout; bump when it changes. (What the encoders compute is in each split's key:
/// the backend, the CPU's kernels and a digest of the encoding code, see `inputs::split_key`.)
pub const FORMAT: &str = "diffris-encoded-split-v2";

/// Where the split described by `key` is stored under `cache`.
pub fn path(cache: &Path, key: &str) -> PathBuf {
    let hash = fnv1a(FORMAT.bytes().chain([0]).chain(key.bytes()));
    cache
        .join("encoded")
        .join(format!("{hash:016x}.safetensors"))
}

/// Writes the encoder outputs of `enc` (not its samples, which are read from the dataset),
/// atomically.
pub fn save(enc: &EncodedSplit, key: &str, path: &Path) -> anyhow::Result<()> {
    let n = enc.len();
    let [c, h, w] = enc.latent_dims;
    let [t, d] = enc.text_dims;
    let (ih, iw) = enc.image_size;
    let mut file = TensorFile::default();
    file.meta("format", FORMAT);
    file.meta("key", key);
    file.floats("latents", vec![n, c, h, w], &enc.latents);
    file.floats("text", vec![n, t, d], &enc.text);
    file.ints("eos", vec![n], &enc.eos);
    // Masks are 0 or 1 (`transforms::resize_nearest` of binary masks): one byte each.
    let masks: Vec<u8> = enc
        .masks
        .iter()
        .map(|&m| match m {
            0.0 => Ok(0),
            1.0 => Ok(1),
            other => Err(anyhow::anyhow!(
                "a mask value of {other} in a split to cache (masks are 0 or 1)"
            )),
        })
        .collect::<anyhow::Result<_>>()?;
    file.bytes("masks", vec![n, ih, iw], &masks);
    file.write(path)
}

/// Reads what [`save`] wrote for `key`, pairing it with `samples` (the same split, read from
/// the dataset); `None` when there is no file. A file that does not hold this split, or whose
/// sizes do not match `samples` and `image_size`, is an error naming it.
pub fn load(
    path: &Path,
    key: &str,
    samples: Vec<Sample>,
    image_size: (usize, usize),
) -> anyhow::Result<Option<EncodedSplit>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let bad = |what: String| {
        anyhow::anyhow!(
            "{}: {what} (a stale or damaged cache file; delete it to encode the split again)",
            path.display()
        )
    };
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let (format, saved_key) = (meta.get("format"), meta.get("key"));
    if format.map(String::as_str) != Some(FORMAT) || saved_key.map(String::as_str) != Some(key) {
        return Err(bad(format!(
            "holds {:?} / {:?}, expected {FORMAT:?} / {key:?}",
            format, saved_key
        )));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let n = samples.len();
    let (ih, iw) = image_size;
    let read = |name: &str, dtype: Dtype, rank: usize| -> anyhow::Result<(Vec<usize>, &[u8])> {
        let v = st
            .tensor(name)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        if v.dtype() != dtype || v.shape().len() != rank || v.shape()[0] != n {
            return Err(bad(format!(
                "tensor `{name}` is {:?} {:?}, expected {dtype:?} of rank {rank} with {n} rows",
                v.dtype(),
                v.shape()
            )));
        }
        Ok((v.shape().to_vec(), v.data()))
    };
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (ls, latents) = read("latents", Dtype::F32, 4)?;
    let (ts, text) = read("text", Dtype::F32, 3)?;
    let (_, eos) = read("eos", Dtype::I64, 1)?;
    let (ms, masks) = read("masks", Dtype::U8, 3)?;
    if ms[1..] != [ih, iw] {
        return Err(bad(format!(
            "masks are {}x{}, the run's input is {ih}x{iw}",
            ms[1], ms[2]
        )));
    }
    // An encoder output is finite; a NaN or infinity is a damaged file (or a diverged encoder)
    // and would make every loss it reaches NaN.
    let finite = |name: &str, values: Vec<f32>| -> anyhow::Result<Vec<f32>> {
        match values.iter().position(|v| !v.is_finite()) {
            None => Ok(values),
            Some(i) => {
                let sample = i / (values.len() / n).max(1);
                Err(bad(format!(
                    "tensor `{name}` holds {} at sample {sample} (`{}`)",
                    values[i], samples[sample].id
                )))
            }
        }
    };
    let latents = finite("latents", f32s(latents))?;
    let text = finite("text", f32s(text))?;
    if let Some(i) = masks.iter().position(|&m| m > 1) {
        let sample = i / (ih * iw).max(1);
        return Err(bad(format!(
            "tensor `masks` holds {} at sample {sample} (`{}`): masks are 0 or 1",
            masks[i], samples[sample].id
        )));
    }
    let masks = masks.iter().map(|&m| m as f32).collect();
    Ok(Some(EncodedSplit {
        samples,
        image_size,
        latent_dims: [ls[1], ls[2], ls[3]],
        text_dims: [ts[1], ts[2]],
        latents,
        text,
        eos: eos
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        masks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize) -> EncodedSplit {
        EncodedSplit {
            samples: vec![],
            image_size: (4, 2),
            latent_dims: [3, 2, 1],
            text_dims: [2, 2],
            latents: (0..n * 6).map(|i| i as f32 * 0.5 - 1.0).collect(),
            text: (0..n * 4).map(|i| -(i as f32) / 3.0).collect(),
            eos: (0..n as i64).map(|i| 7 * i + 1).collect(),
            masks: (0..n * 8).map(|i| (i % 3 == 0) as u8 as f32).collect(),
        }
    }

    fn samples(n: usize) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                id: format!("line {i}"),
                image: PathBuf::from(format!("{i}.png")),
                mask: diffris_data::MaskSource::File {
                    path: PathBuf::from(format!("{i}-mask.png")),
                    threshold: 0,
                },
                sentence: "the red car".into(),
                category: None,
                origin: PathBuf::from("refs.txt"),
            })
            .collect()
    }

    #[test]
    fn a_saved_split_reads_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let enc = split(3);
        let p = path(dir.path(), "k");
        assert!(load(&p, "k", samples(3), (4, 2)).unwrap().is_none());
        save(&enc, "k", &p).unwrap();
        let back = load(&p, "k", samples(3), (4, 2)).unwrap().unwrap();
        assert_eq!(back.latent_dims, enc.latent_dims);
        assert_eq!(back.text_dims, enc.text_dims);
        assert_eq!(back.latents, enc.latents);
        assert_eq!(back.text, enc.text);
        assert_eq!(back.eos, enc.eos);
        assert_eq!(back.masks, enc.masks);
        assert_eq!(back.samples.len(), 3);
    }

    #[test]
    fn keys_name_different_files_and_mismatches_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert_ne!(path(dir.path(), "a"), path(dir.path(), "b"));
        let p = path(dir.path(), "a");
        save(&split(3), "a", &p).unwrap();
        let wrong_key = load(&p, "b", samples(3), (4, 2)).unwrap_err().to_string();
        assert!(wrong_key.contains(&p.display().to_string()), "{wrong_key}");
        assert!(wrong_key.contains("\"b\""), "{wrong_key}");
        let wrong_len = load(&p, "a", samples(2), (4, 2)).unwrap_err().to_string();
        assert!(wrong_len.contains("`latents`"), "{wrong_len}");
        let wrong_size = load(&p, "a", samples(3), (2, 4)).unwrap_err().to_string();
        assert!(wrong_size.contains("4x2"), "{wrong_size}");
        let mut nan = split(3);
        nan.text[5] = f32::NAN; // sample 1 (4 values per sample)
        save(&nan, "a", &p).unwrap();
        let msg = load(&p, "a", samples(3), (4, 2)).unwrap_err().to_string();
        assert!(
            msg.contains("tensor `text` holds NaN at sample 1 (`line 1`)"),
            "{msg}"
        );
        let mut grey = split(3);
        grey.masks[2] = 0.5;
        let msg = save(&grey, "a", &p).unwrap_err().to_string();
        assert!(msg.contains("a mask value of 0.5"), "{msg}");
        std::fs::write(&p, b"not a file").unwrap();
        let junk = load(&p, "a", samples(3), (4, 2)).unwrap_err().to_string();
        assert!(junk.contains("not a safetensors file"), "{junk}");
    }
}
