//! Errors of the data crate: every variant names the file, record or value at fault.

use std::path::PathBuf;

/// Everything that can go wrong while reading text, datasets or images.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read or written. (The I/O error is in the message, not a
    /// `source`: error reports that print the chain would say it twice.)
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A JSON file did not parse or had the wrong structure.
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    /// A record of a dataset file is malformed; `record` says which (a ref id, a line number).
    #[error("{path}: {record}: {message}")]
    Record {
        path: PathBuf,
        record: String,
        message: String,
    },
    /// A dataset file is not what its format says it should be.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A split that the dataset does not have.
    #[error("{root}: no split `{split}` (available: {available})")]
    UnknownSplit {
        root: PathBuf,
        split: String,
        available: String,
    },
    /// An image or mask that cannot be decoded.
    #[error("{path}: cannot decode image: {message}")]
    Image { path: PathBuf, message: String },
    /// The tokenizer vocabulary or merges are malformed.
    #[error("tokenizer ({source_name}): {message}")]
    Tokenizer {
        source_name: String,
        message: String,
    },
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error: source,
        }
    }
}

impl DataError {
    /// A malformed record of `path`.
    pub fn record(
        path: impl Into<PathBuf>,
        record: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Record {
            path: path.into(),
            record: record.into(),
            message: message.into(),
        }
    }

    /// A file that does not follow its format.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
