//! Reading checkpoint files into named tensor snapshots (data stays on disk until applied):
//! safetensors (F32/F16/BF16) and PyTorch zip pickles (`.ckpt`, `.pt`, `.pth`, `.bin`; a
//! `state_dict` entry is used when present). Pickles are parsed, never executed; zip archives
//! are checked strictly first (`archive.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn_store::{ModuleStore, PytorchStore, SafetensorsStore, TensorSnapshot};

use crate::error::{ModelError, Result};

/// The tensors of one checkpoint file, by key.
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, TensorSnapshot>,
}

impl Checkpoint {
    /// Opens a checkpoint by its extension.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::checkpoint(path, "no such checkpoint file"));
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let tensors = match ext.as_str() {
            "safetensors" => {
                let mut store = SafetensorsStore::from_file(path).map_indices_contiguous(false);
                store
                    .get_all_snapshots()
                    .map_err(|e| ModelError::checkpoint(path, format!("reading safetensors: {e}")))?
                    .clone()
            }
            "ckpt" | "pt" | "pth" | "bin" => read_pickle(path)?,
            _ => {
                return Err(ModelError::checkpoint(
                    path,
                    "unknown checkpoint extension (expected .safetensors, .ckpt, .pt, .pth or .bin)",
                ));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
        })
    }

    /// Keys in sorted order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }
}

fn read_pickle(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>> {
    // burn-store zero-fills missing or short storages: refuse those (and bad CRCs) first.
    super::archive::check(path)?;
    // Sequential-index compaction would rename `time_embed.2` to `time_embed.1`: keep keys as they are.
    let nested = PytorchStore::from_file(path)
        .with_top_level_key("state_dict")
        .map_indices_contiguous(false)
        .get_all_snapshots()
        .cloned();
    match nested {
        Ok(map) if !map.is_empty() => Ok(map),
        _ => PytorchStore::from_file(path)
            .map_indices_contiguous(false)
            .get_all_snapshots()
            .cloned()
            .map_err(|e| ModelError::checkpoint(path, format!("reading PyTorch pickle: {e}"))),
    }
}
