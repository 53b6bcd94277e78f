//! srlm-transfer: push, fetch, pull and clone srlm stores over object storage — S3 and
//! S3-compatible stores (Garage, MinIO, R2), GCS, Azure, and a directory on a shared disk
//! (`file://`) — all through the `object_store` crate. Its tokio runtime stays inside
//! [`bucket`]; this crate's API is synchronous and never prints (progress goes to a callback).
//!
//! - [`config`]: remotes of a store (`.srlm/remotes`).
//! - [`layout`]: what a remote holds (packs, bundles, op records) and how its refs follow from
//!   the op records, safely without conditional writes.
//! - [`push()`], [`fetch()`], [`pull`], [`clone_into`], [`hydrate`] (a lazy clone's file bytes).
use serde::Serialize;
use srlm_store::{CommitId, ObjectId, Store};

pub mod bucket;
pub mod config;
mod error;
pub mod fetch;
pub mod layout;
pub mod location;
pub mod push;
pub mod remote;

pub use config::RemoteConfig;
pub use error::{Result, TransferError};
pub use fetch::fetch;
pub use push::push;
pub use remote::Remote;

/// One transfer step, for a progress display.
#[derive(Debug)]
pub enum Progress<'a> {
    Sent { key: &'a str, bytes: u64 },
    Received { key: &'a str, bytes: u64 },
}

/// A ref a push changed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RefChange {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// What a push, fetch, pull or clone did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TransferReport {
    pub objects_sent: u64,
    pub objects_received: u64,
    /// Small objects the other side already had.
    pub objects_skipped: u64,
    pub packs_sent: u64,
    pub packs_received: u64,
    /// Pieces (rows, chunks) the remote already had.
    pub pieces_skipped: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub updated: Vec<RefChange>,
    pub up_to_date: Vec<String>,
    /// Tags that differ, divergence on the remote.
    pub notes: Vec<String>,
    pub seconds: f64,
}

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formats")
}

/// What [`pull`] did to the working tree.
#[derive(Debug, Serialize)]
pub struct PullReport {
    #[serde(flatten)]
    pub transfer: TransferReport,
    /// The branch and its old and new commit (`None` old: it was unborn).
    pub branch: String,
    pub old: Option<CommitId>,
    pub new: Option<CommitId>,
    pub files_written: usize,
}

/// Fetch, then fast-forward the current branch to `refs/remotes/REMOTE/BRANCH` and check it
/// out. Refuses (nothing changed locally but the fetch) when the branch has commits the remote
/// lacks and the remote has moved on, or when the working tree has uncommitted changes (as
/// checkout does).
pub fn pull(
    store: &mut Store,
    remote: &Remote,
    progress: &mut dyn FnMut(Progress),
) -> Result<PullReport> {
    let transfer = fetch(store, remote, false, progress)?;
    // a pull killed while checking out left this: the branch it was moving
    let marker = store.cache_dir("pull").join("branch");
    let resumed = std::fs::read_to_string(&marker).ok();
    let (name, commit) = match (store.head()?, &resumed) {
        (srlm_store::Head::Branch { name, commit }, _) => (name, commit),
        (srlm_store::Head::Detached { .. }, Some(b)) => {
            let c = store.branches()?.into_iter().find(|(n, _)| n == b);
            (b.clone(), c.map(|(_, c)| c))
        }
        (srlm_store::Head::Detached { .. }, None) => {
            return Err(TransferError::Store(srlm_store::StoreError::BadRefName {
                kind: "HEAD",
                name: "HEAD".into(),
                reason: "detached: pull needs a branch checked out",
            }))
        }
    };
    let theirs = store
        .remote_refs(&remote.name)?
        .into_iter()
        .find(|(b, _)| *b == name)
        .map(|(_, c)| c);
    let mut rep = PullReport {
        transfer,
        branch: name.clone(),
        old: commit,
        new: commit,
        files_written: 0,
    };
    let Some(theirs) = theirs else {
        return Ok(rep);
    };
    if let Some(ours) = commit {
        if resumed.is_none() && (ours == theirs || store.is_ancestor(&theirs, &ours)?) {
            return Ok(rep); // nothing new, or we are ahead
        }
        if !store.is_ancestor(&ours, &theirs)? {
            return Err(TransferError::NonFastForward {
                remote: remote.name.clone(),
                name: format!("refs/heads/{name} (pull)"),
                ours: ours.to_hex(),
                theirs: theirs.to_hex(),
            });
        }
    }
    // Check out first (it refuses over uncommitted changes), then move the branch and put HEAD
    // back on it. The marker lets a re-run after a kill finish the job: the first attempt found
    // the tree clean, so what differs now is this pull's own half-written checkout.
    let wd = store.workdir().to_path_buf();
    let write = |p: &std::path::Path, b: &[u8]| -> Result<()> {
        std::fs::create_dir_all(p.parent().expect("in cache")).map_err(|e| io_err(p, e))?;
        std::fs::write(p, b).map_err(|e| io_err(p, e))
    };
    write(&marker, name.as_bytes())?;
    let co = store.checkout(&wd, &theirs.to_hex(), &[], resumed.is_some())?;
    store.set_branch(&name, &theirs, true)?;
    store.checkout(&wd, &name, &[], false)?;
    std::fs::remove_file(&marker).map_err(|e| io_err(&marker, e))?;
    rep.files_written = co.written.len();
    rep.new = Some(theirs);
    Ok(rep)
}

fn io_err(p: &std::path::Path, err: std::io::Error) -> TransferError {
    TransferError::Store(srlm_store::StoreError::Io {
        path: p.to_path_buf(),
        err,
    })
}

/// Clone `cfg`'s remote into `dir` (a new store; `dir` must not be a store): fetch it as
/// remote `origin`, create the branch `main` (or the remote's only branch) and, with
/// `checkout`, check it out. With `lazy`, file bytes stay on the remote: the branch is set and
/// the files are fetched by [`hydrate`] when a command needs them (the checkout, when asked
/// for, fetches the branch's own files). A lazy clone without checkout transfers metadata
/// only: the branch is set, the working tree and the staging area stay empty (as after
/// `git clone --no-checkout`), and a later checkout fetches what it writes.
pub fn clone_into(
    dir: &std::path::Path,
    cfg: RemoteConfig,
    lazy: bool,
    checkout: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Store, TransferReport)> {
    let remote = Remote::open("origin", &cfg)?;
    if !remote.check_format()? {
        return Err(TransferError::EmptyRemote {
            url: remote.url().into(),
        });
    }
    let mut store = Store::init(dir)?;
    config::add(&store, "origin", RemoteConfig { lazy, ..cfg })?;
    if lazy {
        store.mark_partial()?;
    }
    let mut rep = fetch(&mut store, &remote, lazy, progress)?;
    let branches = store.remote_refs("origin")?;
    let pick = branches
        .iter()
        .find(|(b, _)| b == "main")
        .or_else(|| branches.first())
        .cloned();
    if let Some((b, c)) = pick {
        store.set_branch(&b, &c, true)?;
        if !checkout {
            return Ok((store, rep));
        }
        if lazy {
            let tree = store.commit_tree(&c)?;
            let want = missing_pieces(&store, tree.entries.values().map(|e| &e.id))?;
            fetch::receive_pieces(&store, &remote, &want, &mut rep, progress)?;
        }
        let wd = store.workdir().to_path_buf();
        store.checkout(&wd, &b, &[], true)?;
    }
    Ok((store, rep))
}

/// The pieces of some files (by manifest id) that this store lacks.
pub fn missing_pieces<'a>(
    store: &Store,
    files: impl Iterator<Item = &'a srlm_store::ManifestId>,
) -> Result<Vec<ObjectId>> {
    let mut out = Vec::new();
    for id in files {
        for (p, _) in store.read_manifest(id)?.pieces() {
            if !store.has_piece(&p.0)? {
                out.push(p.0);
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Fetch the bytes of `files` (by manifest id) that a lazy clone lacks, from the remote it was cloned
/// from (the first lazy remote). Returns the bytes received (0 when nothing was missing).
pub fn hydrate<'a>(
    store: &Store,
    files: impl Iterator<Item = &'a srlm_store::ManifestId>,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64> {
    let want = missing_pieces(store, files)?;
    if want.is_empty() {
        return Ok(0);
    }
    let remotes = config::list(store)?;
    let Some((name, cfg)) = remotes
        .iter()
        .find(|(_, c)| c.lazy)
        .or_else(|| remotes.first())
    else {
        return Err(TransferError::PieceNotHere {
            id: want[0].to_hex(),
        });
    };
    let remote = Remote::open(name, cfg)?;
    let mut rep = TransferReport::default();
    fetch::receive_pieces(store, &remote, &want, &mut rep, progress)?;
    Ok(rep.bytes_received)
}
