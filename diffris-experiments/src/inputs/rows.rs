//! The per-sample rows of one tensor of an encoded split, held in memory or read from a file on
//! demand. A split read from the encoded cache stays on disk: a batch reads its rows with
//! positioned reads (the page cache, not the process, holds what was read), so a training
//! process holds one batch of a split, never the split.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::Dtype;

/// Rows of `per` elements of one element type, little-endian.
#[derive(Debug, Clone)]
pub struct Rows {
    dtype: Dtype,
    per: usize,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Memory(Vec<u8>),
    File {
        file: Arc<File>,
        path: PathBuf,
        /// Where row 0 starts in the file.
        offset: u64,
    },
}

/// The element types a row may hold: the encoders' floats at their precision, and bytes.
pub const ROW_TYPES: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::U8];

/// Bytes of one element of a row type.
pub fn element_size(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}

impl Rows {
    /// Rows of f32 values held in memory (`values.len()` a multiple of `per`).
    pub fn from_f32(per: usize, values: &[f32]) -> Self {
        Self::memory(
            Dtype::F32,
            per,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    /// Rows of `dtype` held in memory as little-endian `bytes`.
    pub fn memory(dtype: Dtype, per: usize, bytes: Vec<u8>) -> Self {
        assert!(ROW_TYPES.contains(&dtype), "rows of {dtype:?}");
        Self {
            dtype,
            per,
            source: Source::Memory(bytes),
        }
    }

    /// Rows of `dtype` stored in `file` (at `path`) from byte `offset` on.
    pub fn file(dtype: Dtype, per: usize, file: Arc<File>, path: &Path, offset: u64) -> Self {
        assert!(ROW_TYPES.contains(&dtype), "rows of {dtype:?}");
        Self {
            dtype,
            per,
            source: Source::File {
                file,
                path: path.to_path_buf(),
                offset,
            },
        }
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Elements per row.
    pub fn per(&self) -> usize {
        self.per
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.per * element_size(self.dtype)
    }

    /// Whether the rows are read from a file rather than held in memory.
    pub fn on_disk(&self) -> bool {
        matches!(self.source, Source::File { .. })
    }

    /// The raw bytes of rows `first..first + count` into `out` (resized to fit).
    pub fn read_raw(&self, first: usize, count: usize, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let (start, len) = (first * self.row_bytes(), count * self.row_bytes());
        out.resize(len, 0);
        match &self.source {
            Source::Memory(bytes) => {
                let src = bytes.get(start..start + len).ok_or_else(|| {
                    anyhow::anyhow!(
                        "rows {first}..{} past the {} held",
                        first + count,
                        bytes.len() / self.row_bytes().max(1)
                    )
                })?;
                out.copy_from_slice(src);
            }
            Source::File { file, path, offset } => {
                file.read_exact_at(out, offset + start as u64)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "reading rows {first}..{} of an encoded split from {}: {e}",
                            first + count,
                            path.display()
                        )
                    })?;
            }
        }
        Ok(())
    }

    /// Rows `indices`, one after another, as f32 values.
    pub fn gather(&self, indices: &[usize]) -> anyhow::Result<Vec<f32>> {
        let mut out = Vec::with_capacity(indices.len() * self.per);
        let mut buf = Vec::new();
        // Runs of consecutive indices (evaluation reads a split in order) are one read each.
        let mut i = 0;
        while i < indices.len() {
            let mut run = 1;
            while i + run < indices.len() && indices[i + run] == indices[i] + run {
                run += 1;
            }
            self.read_raw(indices[i], run, &mut buf)?;
            decode(self.dtype, &buf, &mut out);
            i += run;
        }
        Ok(out)
    }

    /// Row `i` as f32 values.
    pub fn row(&self, i: usize) -> anyhow::Result<Vec<f32>> {
        self.gather(&[i])
    }

    /// The first `n` rows as f32 values (for small splits and tests).
    pub fn all(&self, n: usize) -> anyhow::Result<Vec<f32>> {
        self.gather(&(0..n).collect::<Vec<_>>())
    }

    /// Visits the first `n` rows in order, `chunk` rows at a time, as raw bytes with the index of
    /// their first row: one pass over a file with one chunk held.
    pub fn scan(
        &self,
        n: usize,
        chunk: usize,
        mut visit: impl FnMut(usize, &[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut buf = Vec::new();
        let mut first = 0;
        while first < n {
            let count = chunk.max(1).min(n - first);
            self.read_raw(first, count, &mut buf)?;
            visit(first, &buf)?;
            first += count;
        }
        Ok(())
    }
}

/// Appends the little-endian `bytes` of `dtype` elements to `out` as f32 (exact: every row type
/// is a subset of f32).
pub fn decode(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        Dtype::U8 => out.extend(bytes.iter().map(|&b| b as f32)),
        other => unreachable!("rows of {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file holding a 5-byte prefix, then the rows: read from the file, the rows are what
    /// memory holds, for every element type.
    #[test]
    fn file_rows_read_what_memory_rows_hold() {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let cases = [
            (
                Dtype::F32,
                values
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<_>>(),
            ),
            (
                Dtype::F16,
                values
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            (
                Dtype::BF16,
                values
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (dtype, bytes) in cases {
            let path = dir.path().join(format!("{dtype:?}"));
            let mut f = File::create(&path).unwrap();
            f.write_all(b"head:").unwrap();
            f.write_all(&bytes).unwrap();
            drop(f);
            let file = Rows::file(dtype, 3, Arc::new(File::open(&path).unwrap()), &path, 5);
            let memory = Rows::memory(dtype, 3, bytes);
            // Multiples of 0.5 up to 3.5 in magnitude are exact in every type.
            assert_eq!(memory.all(4).unwrap(), values, "{dtype:?}");
            let picked = [3, 0, 1, 2];
            let expected: Vec<f32> = picked
                .iter()
                .flat_map(|&i| values[i * 3..i * 3 + 3].to_vec())
                .collect();
            assert_eq!(file.gather(&picked).unwrap(), expected, "{dtype:?}");
            assert_eq!(memory.gather(&picked).unwrap(), expected, "{dtype:?}");
            assert_eq!(file.row(2).unwrap(), values[6..9], "{dtype:?}");
            let err = file.row(4).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
        let bytes = Rows::memory(Dtype::U8, 2, vec![0, 1, 1, 0]);
        assert_eq!(bytes.gather(&[1, 0]).unwrap(), [1.0, 0.0, 0.0, 1.0]);
        let mut seen = vec![];
        bytes
            .scan(2, 1, |first, b| {
                seen.push((first, b.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [(0, vec![0, 1]), (1, vec![1, 0])]);
    }
}
