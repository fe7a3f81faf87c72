//! A split's encoder outputs on disk, under a key naming the configuration, what computed them
//! and the files they were computed from (`inputs::split_key`, [`crate::inputs::fingerprint`]): the
//! parent of `ablation --jobs N` encodes each split once and its runs, each in its own process,
//! read the file, as do later runs of the same data and weights (a resumed run, another seed or
//! variant, `eval`, `figures`), instead of encoding the split again.
//!
//! The file is a safetensors file (`latents`, `text`, `eos`, `masks`, one row per sample) written
//! a batch at a time as the encoders produce it ([`Writer`]) and read a batch at a time
//! ([`load`] returns rows on disk, see [`crate::inputs::rows`]): neither the encoding process nor a
//! training process holds a whole split. Latents and text states keep the frozen stack's
//! precision (f32, f16 or bf16: what the encoders computed, so reading them back is exact);
//! masks are one byte per pixel (0 or 1), a quarter of their f32 size.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use diffris_data::Sample;
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

use crate::inputs::rows::{Rows, decode, element_size};
use crate::inputs::split::{EncodedSplit, count_empty};
use crate::util::cache::fnv1a;

/// The file layout; bump when it changes. (What the encoders compute is in each split's key:
/// the backend, the CPU's kernels and a digest of the encoding code, see `inputs::split_key`.)
pub const FORMAT: &str = "diffris-encoded-split-v3";

/// The most header bytes a file of ours may declare (four tensors and two metadata strings).
const MAX_HEADER: u64 = 1 << 20;

/// Rows read at once when a loaded file is checked.
const CHECK_ROWS: usize = 64;

/// Where the split described by `key` is stored under `cache`.
pub fn path(cache: &Path, key: &str) -> PathBuf {
    let hash = fnv1a(FORMAT.bytes().chain([0]).chain(key.bytes()));
    cache
        .join("encoded")
        .join(format!("{hash:016x}.safetensors"))
}

/// The shape of a split's file: its sample count, network input size, and the element type and
/// per-sample dims of its latents and text states.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    pub samples: usize,
    pub image_size: (usize, usize),
    pub latent: (Dtype, [usize; 3]),
    pub text: (Dtype, [usize; 2]),
}

impl Layout {
    /// `(name, dtype, shape)` of each tensor, in file order.
    fn tensors(&self) -> [(&'static str, Dtype, Vec<usize>); 4] {
        let n = self.samples;
        let ([c, h, w], [t, d], (ih, iw)) = (self.latent.1, self.text.1, self.image_size);
        [
            ("latents", self.latent.0, vec![n, c, h, w]),
            ("text", self.text.0, vec![n, t, d]),
            ("eos", Dtype::I64, vec![n]),
            ("masks", Dtype::U8, vec![n, ih, iw]),
        ]
    }
}

/// Encoder outputs of consecutive samples, as the file stores them (little-endian rows).
#[derive(Debug, Default)]
pub struct EncodedRows {
    pub latents: Vec<u8>,
    pub text: Vec<u8>,
    pub eos: Vec<i64>,
    pub masks: Vec<u8>,
}

/// Masks of 0 and 1 as bytes; any other value is an error (masks are binary:
/// `transforms::resize_nearest` of binary masks).
pub fn mask_bytes(masks: &[f32]) -> anyhow::Result<Vec<u8>> {
    masks
        .iter()
        .map(|&m| match m {
            0.0 => Ok(0),
            1.0 => Ok(1),
            other => Err(anyhow::anyhow!(
                "a mask value of {other} in a split to cache (masks are 0 or 1)"
            )),
        })
        .collect()
}

/// A split's file being written: rows land at their place as they come (from several threads
/// at once), into a temporary sibling file renamed into place by [`Writer::finish`]. Dropped
/// unfinished (an error, a full disk), the temporary file is removed.
#[derive(Debug)]
pub struct Writer {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    layout: Layout,
    /// Where each tensor's rows start in the file, and the bytes of one row.
    starts: [u64; 4],
    row_bytes: [usize; 4],
    rows_written: AtomicUsize,
    finished: bool,
}

impl Writer {
    /// Creates the file for `layout` under `key` (its header written, its rows to come).
    pub fn create(path: &Path, key: &str, layout: Layout) -> anyhow::Result<Self> {
        let tensors = layout.tensors();
        let mut infos = Vec::with_capacity(4);
        let mut offset = 0usize;
        let mut row_bytes = [0usize; 4];
        for (k, (name, dtype, shape)) in tensors.iter().enumerate() {
            row_bytes[k] = shape[1..].iter().product::<usize>() * element_size(*dtype);
            let len = row_bytes[k] * layout.samples;
            infos.push((
                name.to_string(),
                TensorInfo {
                    dtype: *dtype,
                    shape: shape.clone(),
                    data_offsets: (offset, offset + len),
                },
            ));
            offset += len;
        }
        // serde_json's maps are sorted: the same split gives the same bytes.
        let mut json = serde_json::Map::new();
        json.insert(
            "__metadata__".into(),
            serde_json::json!({ "format": FORMAT, "key": key }),
        );
        for (name, info) in &infos {
            json.insert(name.clone(), serde_json::to_value(info)?);
        }
        let mut header = serde_json::to_string(&json)?.into_bytes();
        // The format's own reader accepts it (offsets contiguous, sizes matching the shapes).
        serde_json::from_slice::<Metadata>(&header)
            .map_err(|e| anyhow::anyhow!("the layout of {}: {e}", path.display()))?;
        // Data starts 8-byte aligned, as safetensors' own writer pads it.
        header.resize(header.len().next_multiple_of(8), b' ');
        let data_start = 8 + header.len() as u64;
        let mut starts = [0u64; 4];
        for (k, (_, info)) in infos.iter().enumerate() {
            starts[k] = data_start + info.data_offsets.0 as u64;
        }

        let tmp = crate::util::atomic_file::temp_sibling(path)?;
        let file = File::create(&tmp)
            .with_context(|| format!("creating {} (for {})", tmp.display(), path.display()))?;
        let writer = Self {
            file,
            tmp,
            path: path.to_path_buf(),
            layout,
            starts,
            row_bytes,
            rows_written: AtomicUsize::new(0),
            finished: false,
        };
        let mut head = (header.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(&header);
        writer.put(0, &head)?;
        writer
            .file
            .set_len(data_start + offset as u64)
            .map_err(|e| writer.error(e))?;
        Ok(writer)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn error(&self, e: std::io::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "writing {} (as {}): {e}",
            self.path.display(),
            self.tmp.display()
        )
    }

    fn put(&self, at: u64, bytes: &[u8]) -> anyhow::Result<()> {
        self.file.write_all_at(bytes, at).map_err(|e| self.error(e))
    }

    /// Writes `rows`, the encodings of samples `first..`, at their place.
    pub fn write(&self, first: usize, rows: &EncodedRows) -> anyhow::Result<()> {
        let count = rows.eos.len();
        anyhow::ensure!(
            first + count <= self.layout.samples,
            "rows {first}..{} of a split of {} samples",
            first + count,
            self.layout.samples
        );
        let eos: Vec<u8> = rows.eos.iter().flat_map(|e| e.to_le_bytes()).collect();
        let parts = [&rows.latents[..], &rows.text[..], &eos[..], &rows.masks[..]];
        for (k, (name, ..)) in self.layout.tensors().iter().enumerate() {
            anyhow::ensure!(
                parts[k].len() == count * self.row_bytes[k],
                "{} bytes of `{name}` for {count} samples of {} bytes each",
                parts[k].len(),
                self.row_bytes[k]
            );
        }
        if let Some(m) = rows.masks.iter().find(|&&m| m > 1) {
            anyhow::bail!("a mask value of {m} in a split to cache (masks are 0 or 1)");
        }
        for (k, part) in parts.iter().enumerate() {
            self.put(self.starts[k] + (first * self.row_bytes[k]) as u64, part)?;
        }
        self.rows_written.fetch_add(count, Ordering::SeqCst);
        Ok(())
    }

    /// Checks that every row was written, makes the file durable and renames it into place.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let written = self.rows_written.load(Ordering::SeqCst);
        anyhow::ensure!(
            written == self.layout.samples,
            "{}: {written} of {} samples written",
            self.path.display(),
            self.layout.samples
        );
        self.file.sync_all().map_err(|e| self.error(e))?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming into {}", self.path.display()))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing half-written stays behind (on a full disk, the space is given back).
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a split held in memory (its masks 0 or 1), atomically.
pub fn save(enc: &EncodedSplit, key: &str, path: &Path) -> anyhow::Result<()> {
    let n = enc.len();
    let layout = Layout {
        samples: n,
        image_size: enc.image_size,
        latent: (enc.latents.dtype(), enc.latent_dims),
        text: (enc.text.dtype(), enc.text_dims),
    };
    let writer = Writer::create(path, key, layout)?;
    let mut rows = EncodedRows {
        eos: enc.eos.clone(),
        ..EncodedRows::default()
    };
    enc.latents.read_raw(0, n, &mut rows.latents)?;
    enc.text.read_raw(0, n, &mut rows.text)?;
    rows.masks = mask_bytes(&enc.masks.all(n)?)?;
    writer.write(0, &rows)?;
    writer.finish()
}

/// Opens what [`Writer`] wrote for `key`, pairing it with `samples` (the same split, read from
/// the dataset), its rows left on disk; `None` when there is no file. A file that does not hold
/// this split, whose sizes do not match `samples` and `image_size`, or that holds a non-finite
/// encoder output or a mask value other than 0 and 1 (checked in one pass over the file), is an
/// error naming it.
pub fn load(
    path: &Path,
    key: &str,
    samples: Vec<Sample>,
    image_size: (usize, usize),
) -> anyhow::Result<Option<EncodedSplit>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let bad = |what: String| {
        anyhow::anyhow!(
            "{}: {what} (a stale or damaged cache file; delete it to encode the split again)",
            path.display()
        )
    };
    let file_len = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut n8 = [0u8; 8];
    file.read_exact(&mut n8)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let header_len = u64::from_le_bytes(n8);
    if header_len > MAX_HEADER.min(file_len - 8) {
        return Err(bad(format!(
            "not a safetensors file (a header of {header_len} bytes)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let metadata: Metadata = serde_json::from_slice(&header)
        .map_err(|e| bad(format!("not a safetensors file ({e})")))?;
    let data_start = 8 + header_len;
    if data_start + metadata.data_len() as u64 != file_len {
        return Err(bad(format!(
            "{file_len} bytes where its header describes {}",
            data_start + metadata.data_len() as u64
        )));
    }
    let meta = metadata.metadata().clone().unwrap_or_default();
    let (format, saved_key) = (meta.get("format"), meta.get("key"));
    if format.map(String::as_str) != Some(FORMAT) || saved_key.map(String::as_str) != Some(key) {
        return Err(bad(format!(
            "holds {:?} / {:?}, expected {FORMAT:?} / {key:?}",
            format, saved_key
        )));
    }
    let n = samples.len();
    let (ih, iw) = image_size;
    let tensor = |name: &str, dtypes: &[Dtype], rank: usize| -> anyhow::Result<&TensorInfo> {
        let info = metadata
            .info(name)
            .ok_or_else(|| bad(format!("no tensor `{name}`")))?;
        if !dtypes.contains(&info.dtype) || info.shape.len() != rank || info.shape[0] != n {
            return Err(bad(format!(
                "tensor `{name}` is {:?} {:?}, expected {dtypes:?} of rank {rank} with {n} rows",
                info.dtype, info.shape
            )));
        }
        Ok(info)
    };
    let floats = [Dtype::F32, Dtype::F16, Dtype::BF16];
    let latents = tensor("latents", &floats, 4)?;
    let text = tensor("text", &floats, 3)?;
    let eos = tensor("eos", &[Dtype::I64], 1)?;
    let masks = tensor("masks", &[Dtype::U8], 3)?;
    if masks.shape[1..] != [ih, iw] {
        return Err(bad(format!(
            "masks are {}x{}, the run's input is {ih}x{iw}",
            masks.shape[1], masks.shape[2]
        )));
    }
    let file = Arc::new(file);
    let rows = |info: &TensorInfo| {
        Rows::file(
            info.dtype,
            info.shape[1..].iter().product(),
            file.clone(),
            path,
            data_start + info.data_offsets.0 as u64,
        )
    };
    let mut eos_bytes = vec![0u8; n * 8];
    file.read_exact_at(&mut eos_bytes, data_start + eos.data_offsets.0 as u64)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut split = EncodedSplit {
        image_size,
        latent_dims: [latents.shape[1], latents.shape[2], latents.shape[3]],
        text_dims: [text.shape[1], text.shape[2]],
        latents: rows(latents),
        text: rows(text),
        eos: eos_bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        masks: rows(masks),
        empty_masks: 0, // counted below
        samples,
    };
    // An encoder output is finite; a NaN or infinity is a damaged file (or a diverged encoder)
    // and would make every loss it reaches NaN.
    for (name, r) in [("latents", &split.latents), ("text", &split.text)] {
        let mut values = Vec::new();
        r.scan(n, CHECK_ROWS, |first, bytes| {
            values.clear();
            decode(r.dtype(), bytes, &mut values);
            match values.iter().position(|v| !v.is_finite()) {
                None => Ok(()),
                Some(i) => {
                    let sample = first + i / r.per().max(1);
                    Err(bad(format!(
                        "tensor `{name}` holds {} at sample {sample} (`{}`)",
                        values[i], split.samples[sample].id
                    )))
                }
            }
        })?;
    }
    // One pass over the masks checks them and counts the empty ones.
    let mut empty = 0;
    split.masks.scan(n, CHECK_ROWS, |first, bytes| {
        match bytes.iter().position(|&m| m > 1) {
            None => {
                empty += count_empty(ih * iw, 0, bytes);
                Ok(())
            }
            Some(i) => {
                let sample = first + i / (ih * iw).max(1);
                Err(bad(format!(
                    "tensor `masks` holds {} at sample {sample} (`{}`): masks are 0 or 1",
                    bytes[i], split.samples[sample].id
                )))
            }
        }
    })?;
    split.empty_masks = if ih * iw == 0 { n } else { empty };
    Ok(Some(split))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize) -> EncodedSplit {
        EncodedSplit::from_vecs(
            vec![],
            (4, 2),
            [3, 2, 1],
            [2, 2],
            &(0..n * 6).map(|i| i as f32 * 0.5 - 1.0).collect::<Vec<_>>(),
            &(0..n * 4).map(|i| -(i as f32) / 3.0).collect::<Vec<_>>(),
            (0..n as i64).map(|i| 7 * i + 1).collect(),
            &(0..n * 8)
                .map(|i| (i % 3 == 0) as u8 as f32)
                .collect::<Vec<_>>(),
        )
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
    fn a_saved_split_reads_back_bit_for_bit_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let enc = split(3);
        let p = path(dir.path(), "k");
        assert!(load(&p, "k", samples(3), (4, 2)).unwrap().is_none());
        save(&enc, "k", &p).unwrap();
        let back = load(&p, "k", samples(3), (4, 2)).unwrap().unwrap();
        assert!(back.latents.on_disk() && back.text.on_disk() && back.masks.on_disk());
        assert_eq!(back.masks.dtype(), Dtype::U8, "one byte per mask pixel");
        assert_eq!(back.latent_dims, enc.latent_dims);
        assert_eq!(back.text_dims, enc.text_dims);
        for (a, b) in [
            (&back.latents, &enc.latents),
            (&back.text, &enc.text),
            (&back.masks, &enc.masks),
        ] {
            assert_eq!(a.all(3).unwrap(), b.all(3).unwrap());
        }
        assert_eq!(back.eos, enc.eos);
        assert_eq!(back.samples.len(), 3);
        // safetensors' own reader reads the file (the layout is the format's).
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("masks").unwrap().shape(), [3, 4, 2]);
        assert_eq!(
            st.tensor("eos").unwrap().data()[8],
            8,
            "eos of sample 1 is 8"
        );
    }

    /// Half-precision encoder outputs are stored as they are (2 bytes each) and read back exactly.
    #[test]
    fn half_precision_rows_are_stored_at_their_precision() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "bf16");
        let layout = Layout {
            samples: 2,
            image_size: (1, 2),
            latent: (Dtype::BF16, [1, 1, 2]),
            text: (Dtype::F16, [1, 1]),
        };
        let values = [0.5f32, -3.25, 1.0, 2.0];
        let writer = Writer::create(&p, "bf16", layout).unwrap();
        // Written out of order, as encoding threads finish: sample 1 first.
        for first in [1, 0] {
            let rows = EncodedRows {
                latents: values[first * 2..first * 2 + 2]
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
                text: half::f16::from_f32(values[first]).to_le_bytes().to_vec(),
                eos: vec![first as i64],
                masks: vec![first as u8, 1],
            };
            writer.write(first, &rows).unwrap();
        }
        writer.finish().unwrap();
        let back = load(&p, "bf16", samples(2), (1, 2)).unwrap().unwrap();
        assert_eq!(back.latents.dtype(), Dtype::BF16);
        assert_eq!(back.latents.all(2).unwrap(), values);
        assert_eq!(back.text.all(2).unwrap(), [0.5, -3.25]);
        assert_eq!(back.masks.all(2).unwrap(), [0.0, 1.0, 1.0, 1.0]);
        assert_eq!(back.eos, [0, 1]);
        let header = 8 + u64::from_le_bytes(std::fs::read(&p).unwrap()[..8].try_into().unwrap());
        // 2 samples: latents 2x2x2 bytes, text 2x2, eos 2x8, masks 2x2.
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            header + 8 + 4 + 16 + 4
        );
    }

    /// A writer dropped before every row is written leaves nothing behind, and a finish with
    /// rows missing is an error.
    #[test]
    fn an_unfinished_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "k");
        let layout = Layout {
            samples: 2,
            image_size: (1, 1),
            latent: (Dtype::F32, [1, 1, 1]),
            text: (Dtype::F32, [1, 1]),
        };
        let one = EncodedRows {
            latents: 1f32.to_le_bytes().to_vec(),
            text: 2f32.to_le_bytes().to_vec(),
            eos: vec![3],
            masks: vec![1],
        };
        let writer = Writer::create(&p, "k", layout).unwrap();
        writer.write(0, &one).unwrap();
        let err = writer.write(2, &one).unwrap_err().to_string();
        assert!(err.contains("rows 2..3 of a split of 2 samples"), "{err}");
        let err = writer.finish().unwrap_err().to_string();
        assert!(err.contains("1 of 2 samples written"), "{err}");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        let writer = Writer::create(&p, "k", layout).unwrap();
        let err = writer
            .write(
                0,
                &EncodedRows {
                    masks: vec![2],
                    ..one
                },
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("a mask value of 2"), "{err}");
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
        let mut text: Vec<f32> = split(3).text.all(3).unwrap();
        text[5] = f32::NAN; // sample 1 (4 values per sample)
        let mut nan = split(3);
        nan.text = Rows::from_f32(4, &text);
        save(&nan, "a", &p).unwrap();
        let msg = load(&p, "a", samples(3), (4, 2)).unwrap_err().to_string();
        assert!(
            msg.contains("tensor `text` holds NaN at sample 1 (`line 1`)"),
            "{msg}"
        );
        let mut masks = split(3).masks.all(3).unwrap();
        masks[2] = 0.5;
        let mut grey = split(3);
        grey.masks = Rows::from_f32(8, &masks);
        let msg = save(&grey, "a", &p).unwrap_err().to_string();
        assert!(msg.contains("a mask value of 0.5"), "{msg}");
        // A file cut short (a copy interrupted) is not read past its end.
        save(&split(3), "a", &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let short = load(&p, "a", samples(3), (4, 2)).unwrap_err().to_string();
        assert!(short.contains("where its header describes"), "{short}");
        std::fs::write(&p, b"not a file").unwrap();
        let junk = load(&p, "a", samples(3), (4, 2)).unwrap_err().to_string();
        assert!(junk.contains("not a safetensors file"), "{junk}");
    }
}
