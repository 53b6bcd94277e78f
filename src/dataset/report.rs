//! The whole diff report (tree changes, one row-level diff per changed dataset, errors), the
//! document `srlm diff --json` prints. Its schema is `srlm.diff/v1`, documented in the README;
//! change it only by changing that version.
use serde::Serialize;

use super::engine::DatasetDiff;
use super::DatasetError;

/// The schema name and version of [`Report`].
pub const REPORT_SCHEMA: &str = "srlm.diff/v1";

/// One side of a changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntrySide {
    /// Hex content id (BLAKE3 of the file; the store's id for committed entries).
    pub id: String,
    pub size: u64,
    /// Row count of a dataset (committed datasets only).
    pub rows: Option<u64>,
}

/// A path that differs between the two sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryChange {
    pub path: String,
    /// `added`, `removed` or `modified`.
    pub status: &'static str,
    /// `dataset` (JSONL, diffed row by row), `checkpoint`, `file` or `binary`.
    pub kind: String,
    pub a: Option<EntrySide>,
    pub b: Option<EntrySide>,
}

/// The row-level diff of one changed dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetReport {
    pub path: String,
    #[serde(flatten)]
    pub diff: DatasetDiff,
}

/// A dataset that could not be diffed (with `--keep-going`).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    pub path: String,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub field: Option<String>,
    pub message: String,
}

impl ErrorReport {
    /// The report of `err` while diffing `path`.
    pub fn new(path: &str, err: &DatasetError) -> ErrorReport {
        ErrorReport {
            path: path.into(),
            file: err.file().map(str::to_owned),
            line: err.line(),
            field: err.field().map(str::to_owned),
            message: {
                // The whole chain: an I/O error's cause is its point.
                let mut m = err.to_string();
                let mut src = std::error::Error::source(err);
                while let Some(e) = src {
                    m.push_str(&format!(": {e}"));
                    src = e.source();
                }
                m
            },
        }
    }
}

/// Everything one `srlm diff` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// The two sides as given (revisions or paths).
    pub a: String,
    pub b: String,
    /// Paths that differ (unchanged paths are only counted).
    pub changes: Vec<EntryChange>,
    pub unchanged_paths: u64,
    pub datasets: Vec<DatasetReport>,
    /// Checkpoints that changed: files, tensors, bytes added (absent when none did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<super::checkpoint_diff::CheckpointChange>,
    pub errors: Vec<ErrorReport>,
}

impl Report {
    /// An empty report between `a` and `b`.
    pub fn new(a: impl Into<String>, b: impl Into<String>) -> Report {
        Report {
            schema: REPORT_SCHEMA,
            a: a.into(),
            b: b.into(),
            changes: Vec::new(),
            unchanged_paths: 0,
            datasets: Vec::new(),
            checkpoints: Vec::new(),
            errors: Vec::new(),
        }
    }
}
