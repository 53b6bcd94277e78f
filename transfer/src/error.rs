//! The transfer's error type. Messages name the remote (by its URL, which never holds
//! credentials) and what was being done; they never mention command-line flags.
use srlm_store::StoreError;

/// Errors of push, fetch and clone.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "unknown remote URL scheme in {url:?}: use s3://BUCKET[/PREFIX], file:///PATH, \
         gs://BUCKET[/PREFIX] or az://CONTAINER[/PREFIX]"
    )]
    UnknownScheme { url: String },
    #[error("bad remote URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{url}: {what} failed: {detail}")]
    Storage {
        url: String,
        what: String,
        detail: String,
    },
    #[error("{url}: the bucket does not exist (or these credentials may not list it): {detail}")]
    NoBucket { url: String, detail: String },
    #[error("{url}: no answer from the endpoint within {secs}s ({what}): {detail}")]
    Timeout {
        url: String,
        what: String,
        secs: u64,
        detail: String,
    },
    #[error(
        "{url}: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (srlm never \
         stores them)"
    )]
    NoCredentials { url: String },
    #[error("{url} is not an srlm remote (it holds objects but no FORMAT file)")]
    NotARemote { url: String },
    #[error("{url} is empty: nothing has been pushed to it yet")]
    EmptyRemote { url: String },
    #[error(
        "{url} has remote format {found}, newer than this srlm supports ({supported}); upgrade \
         srlm to use it"
    )]
    NewerFormat {
        url: String,
        found: String,
        supported: u32,
    },
    #[error("{url}: {path} is corrupt ({detail}); nothing of it was written locally")]
    Corrupt {
        url: String,
        path: String,
        detail: String,
    },
    #[error("{url}: {name} names {id}, which the remote does not hold (no pushed bundle has it)")]
    RemoteMissing {
        url: String,
        name: String,
        id: String,
    },
    #[error(
        "push of {name} refused: not a fast-forward ({remote} has {theirs}, which {ours} does \
         not descend from); fetch and build on it, or force the push to overwrite it"
    )]
    NonFastForward {
        remote: String,
        name: String,
        ours: String,
        theirs: String,
    },
    #[error(
        "push of {name} refused: {remote} has {theirs}, which this store does not have; fetch \
         first (or force the push to overwrite it)"
    )]
    UnknownRemoteCommit {
        remote: String,
        name: String,
        theirs: String,
    },
    #[error(
        "push of {name} lost a race: a concurrent push set it to {winner} on {remote} first; \
         your commit {ours} is kept on the remote (op {op}) but {name} does not name it; fetch \
         and push again"
    )]
    RaceLost {
        remote: String,
        name: String,
        ours: String,
        winner: String,
        op: String,
    },
    #[error("{name}: nothing to push (no such branch or tag here)")]
    NoSuchRef { name: String },
    #[error("{remote} has no branch or tag named {name:?}")]
    NoSuchRemoteRef { remote: String, name: String },
    #[error(
        "piece {id} is not in this store (it was cloned lazily and the piece was never \
         fetched); fetch it from the remote first"
    )]
    PieceNotHere { id: String },
    #[error("no remote named {0:?}")]
    NoSuchRemote(String),
    #[error("a remote named {0:?} already exists")]
    RemoteExists(String),
    #[error("bad remote name {0:?}: letters, digits, '-', '_' and '.' only")]
    BadRemoteName(String),
    #[error(".srlm/remotes: {0}")]
    BadConfig(String),
}

pub type Result<T, E = TransferError> = std::result::Result<T, E>;
