//! Datasets of the loop: kinds recognised from fields, natural keys, row-level diff,
//! statistics for preference data, trends across iterations.
//!
//! One diff engine ([`engine`]) works over two sides, each a list of [`record::RowRecord`]s (row
//! id, key hash, the few numbers the statistics need) plus a way to fetch a row's bytes. Files
//! ([`files`]) produce records by parsing every line; committed datasets ([`committed`]) take row
//! ids from the store's manifests and records from a per-manifest cache ([`cache`]), so rows
//! present on both sides are never reparsed.
use std::path::PathBuf;

pub mod cache;
pub mod checkpoint_diff;
pub mod committed;
pub mod engine;
pub mod files;
pub mod kind;
pub mod record;
pub mod render;
pub mod report;
pub mod stats;
pub mod trend;

pub use engine::{DatasetDiff, DiffOptions};
pub use kind::{DatasetKind, KeySpec};

/// What can go wrong reading or diffing datasets. Row errors name the file (or `REV:path`), the
/// 1-based line and, where one is to blame, the field.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: not valid UTF-8 (byte {offset} of the line)")]
    NotUtf8 {
        file: String,
        line: u64,
        offset: usize,
    },
    #[error("{file}:{line}: not JSON: {message}")]
    NotJson {
        file: String,
        line: u64,
        message: String,
    },
    #[error("{file}:{line}: not a JSON object (a JSONL dataset row must be an object)")]
    NotObject { file: String, line: u64 },
    #[error("{file}:{line}: field `{field}` is missing (it is part of the key {key}; choose another with --key)")]
    MissingKey {
        file: String,
        line: u64,
        field: String,
        key: String,
    },
    #[error("{file}: {message}")]
    Store { file: String, message: String },
    #[error("{0}")]
    Usage(String),
}

impl DatasetError {
    /// The file (or `REV:path`) the error is about, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            DatasetError::NotUtf8 { file, .. }
            | DatasetError::NotJson { file, .. }
            | DatasetError::NotObject { file, .. }
            | DatasetError::MissingKey { file, .. }
            | DatasetError::Store { file, .. } => Some(file),
            DatasetError::Io { .. } | DatasetError::Usage(_) => None,
        }
    }

    /// The 1-based line the error is about, if any.
    pub fn line(&self) -> Option<u64> {
        match self {
            DatasetError::NotUtf8 { line, .. }
            | DatasetError::NotJson { line, .. }
            | DatasetError::NotObject { line, .. }
            | DatasetError::MissingKey { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            DatasetError::MissingKey { field, .. } => Some(field),
            _ => None,
        }
    }
}
