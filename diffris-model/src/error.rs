//! Errors of the model crate: every variant names the file, key or shape at fault.

use std::path::PathBuf;

/// Everything that can go wrong while building models or loading checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read. (The I/O error is in the message, not a `source`: error
    /// reports that print the chain would say it twice.)
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A `config.json` (or an in-code config) describes something diffris cannot build.
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    /// A checkpoint file could not be read.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// Weights the model needs are absent from the checkpoint.
    #[error("{path}: {} missing key(s), e.g. {}", keys.len(), preview(keys))]
    MissingKeys { path: PathBuf, keys: Vec<String> },
    /// Weights in the checkpoint that no rule maps onto the model.
    #[error("{path}: {} unused key(s), e.g. {}", keys.len(), preview(keys))]
    UnusedKeys { path: PathBuf, keys: Vec<String> },
    /// A checkpoint tensor whose shape differs from the module's parameter.
    #[error("{path}: key `{key}` has shape {found:?} but the model expects {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
}

/// A configuration value diffris cannot build, named by its field path
/// (`unet.block_out_channels[2]`, `adapter.heads`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error with its field under `prefix` (`adapter` + `heads` = `adapter.heads`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// `Err` naming `field` unless `ok`.
pub fn ensure(ok: bool, field: &str, problem: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(field, problem()))
    }
}

fn preview(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    s
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error: source,
        }
    }

    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
