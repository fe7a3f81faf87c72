//! Writing named tensors to a safetensors file, atomically (a temporary file renamed into place,
//! so an interrupted write never leaves a half-written file under the final name).

use diffris_kernels::SdBackend;
use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use burn::tensor::Tensor;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// Named tensors waiting to be written.
#[derive(Default)]
pub struct TensorFile {
    entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Adds a float tensor (stored as F32).
    pub fn float<B: SdBackend, const D: usize>(&mut self, name: &str, t: Tensor<B, D>) {
        let shape = t.dims().to_vec();
        let bytes = t
            .into_data()
            .iter::<f32>()
            .flat_map(f32::to_le_bytes)
            .collect();
        self.entries
            .push((name.to_string(), Dtype::F32, shape, bytes));
    }

    /// Adds floats of the given shape (stored as F32).
    pub fn floats(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.entries
            .push((name.to_string(), Dtype::F32, shape, bytes));
    }

    /// Adds bytes of the given shape (stored as U8).
    pub fn bytes(&mut self, name: &str, shape: Vec<usize>, values: &[u8]) {
        self.entries
            .push((name.to_string(), Dtype::U8, shape, values.to_vec()));
    }

    /// Adds integers (stored as I64).
    pub fn ints(&mut self, name: &str, shape: Vec<usize>, values: &[i64]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.entries
            .push((name.to_string(), Dtype::I64, shape, bytes));
    }

    /// Adds a metadata string.
    pub fn meta(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(key.to_string(), value.into());
    }

    /// Names of the tensors added so far.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.0.as_str())
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let views: Vec<(String, TensorView<'_>)> = self
            .entries
            .iter()
            .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
            .collect::<Result<_, safetensors::SafeTensorError>>()?;
        let bytes = safetensors::serialize(views, Some(self.metadata.clone()))?;
        write_atomic(path, &bytes)
    }
}

/// Checks, before the work that fills it, that files can be written into `dir`: the folder, or
/// the nearest of its ancestors that exists (where the folder would be created), is a folder
/// where a probe file can be created (and is removed). Nothing is left behind; the error names
/// the folder.
pub fn check_writable_dir(dir: &Path) -> anyhow::Result<()> {
    writable(dir, dir)
}

/// [`check_writable_dir`] for the folder a file `path` goes into.
pub fn check_writable_file(path: &Path) -> anyhow::Result<()> {
    writable(path, path.parent().unwrap_or(Path::new(".")))
}

/// Whether files can be written into `dir`; errors name `target` (the folder or the file).
fn writable(target: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut at = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    while !at.exists() {
        at = match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    anyhow::ensure!(
        at.is_dir(),
        "cannot write {}: {} is not a folder",
        target.display(),
        at.display()
    );
    let probe = at.join(format!(".diffris-probe-{}", std::process::id()));
    std::fs::File::create(&probe)
        .with_context(|| format!("cannot write {} (in {})", target.display(), at.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The temporary sibling (`.NAME.tmp-PID`) through which `path` is written and renamed into
/// place, its folder created.
pub fn temp_sibling(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    Ok(dir.join(format!(".{name}.tmp-{}", std::process::id())))
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_sibling(path)?;
    let written = std::fs::write(&tmp, bytes)
        .with_context(|| format!("writing {} (as {})", path.display(), tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
        });
    if written.is_err() {
        // Nothing half-written stays behind (on a full disk, the space is given back).
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
