//! The store's error type: every variant names what it concerns (path, id, revision, line).
use std::path::PathBuf;

use crate::ObjectId;

/// Errors of the store. Messages are complete sentences fit for a user.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("not an srlm store: no .srlm directory in {0} or any parent (run `srlm init`)")]
    NotAStore(PathBuf),
    #[error("{0} is already an srlm store")]
    AlreadyAStore(PathBuf),
    #[error(
        "the store at {path} has format version {found}, newer than this srlm supports \
         ({supported}); upgrade srlm to use it"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: unreadable store format file ({detail})")]
    BadFormat { path: PathBuf, detail: String },
    #[error(
        "the store is locked by another srlm process ({holder}); gave up after {waited_s}s \
         (set SRLM_LOCK_TIMEOUT=SECONDS to wait longer)"
    )]
    Locked { holder: String, waited_s: u64 },
    #[error("index database {path}: {detail}")]
    Index { path: PathBuf, detail: String },
    #[error("{path}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("{0}: no such file or directory")]
    Missing(PathBuf),
    #[error("object {0} is missing from the store")]
    MissingObject(ObjectId),
    #[error("object {id} is corrupt: {detail}")]
    Corrupt { id: ObjectId, detail: String },
    #[error("{what} {id} is malformed: {detail}")]
    Malformed {
        what: &'static str,
        id: ObjectId,
        detail: String,
    },
    #[error("unknown revision '{0}'")]
    UnknownRevision(String),
    #[error("revision '{rev}': {detail}")]
    BadRevision { rev: String, detail: String },
    #[error("'{path}' does not exist in revision {rev}")]
    PathNotInRevision { rev: String, path: String },
    #[error("invalid {kind} name '{name}': {reason}")]
    BadRefName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("{kind} '{name}' already exists (use --force to move it)")]
    RefExists { kind: &'static str, name: String },
    #[error("{kind} '{name}' not found")]
    RefNotFound { kind: &'static str, name: String },
    #[error("cannot delete branch '{0}': HEAD points at it")]
    BranchCheckedOut(String),
    #[error("nothing to commit (the staged tree equals HEAD's)")]
    NothingToCommit,
    #[error("invalid id '{id}': {reason}")]
    BadId { id: String, reason: String },
    #[error("{path}, line {line}: row of {len} bytes is larger than the 4 GiB row limit")]
    RowTooLarge {
        path: PathBuf,
        line: u64,
        len: usize,
    },
    #[error(
        "uncommitted changes would be overwritten: {} (commit them, or use --force)",
        .0.join(", ")
    )]
    Dirty(Vec<String>),
    #[error("run record is not valid JSON: {0}")]
    BadRunRecord(String),
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attach a path to an io::Error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|err| StoreError::Io {
            path: path.into(),
            err,
        })
    }
}
