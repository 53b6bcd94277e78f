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
        "the store is locked by another process ({holder}); gave up after {waited_s:.1}s \
         (set SRLM_LOCK_TIMEOUT=SECONDS to wait longer)"
    )]
    Locked { holder: String, waited_s: f64 },
    #[error("SRLM_LOCK_TIMEOUT must be a number of seconds >= 0 (or inf), not {0:?}")]
    BadLockTimeout(String),
    #[error("the store is open for reading only; {0} needs it opened for writing")]
    ReadOnly(&'static str),
    #[error(
        "the store at {0} has format version 1 and needs a one-time upgrade of its refs, \
         which needs write access: open it once as a user who may write to it"
    )]
    UpgradeNeeded(PathBuf),
    #[error("ref {name} changed while it was being updated (expected {expected}, found {found})")]
    RefConflict {
        name: String,
        expected: String,
        found: String,
    },
    #[error(
        "gc refused: {} commit(s) that no branch or tag reaches and that no recorded ref change \
         left behind ({}); refs or the index may have been lost. Tag or branch what you want to \
         keep; gc's force option deletes them",
        .0.len(), .0.iter().map(|c| c.to_string()[..12].to_string()).collect::<Vec<_>>().join(", ")
    )]
    GcUnreferencedCommits(Vec<ObjectId>),
    #[error("{path}: not a regular file (a {what}); srlm only reads and writes regular files")]
    NotRegular { path: PathBuf, what: &'static str },
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
