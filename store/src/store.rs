//! The [`Store`] façade: opening (with the format-1 upgrade), small objects and pieces through
//! the object database ([`crate::odb`]), the staging area, lineage, the op log and the files the
//! application keeps in `.srlm/` ([`Store::pin`], [`Store::cache_dir`], [`Store::hooks_dir`]).
//! Opening lives in `open`, lineage in `lineage`, pins in `pins`, the op log in `oplog`, staging
//! and the working tree in `worktree` and `checkout`, refs and revisions in `revision`,
//! maintenance in `fsck` and `gc`.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::index::Index;
use crate::lock::{LockMode, StoreLock};
use crate::objects::{tag_of, Manifest, RunObject};
use crate::odb::{LocalOdb, ObjectDb};
use crate::refs::FileRefs;
use crate::stage::StageFile;
use crate::{
    BlobId, Commit, CommitId, ManifestId, ObjectId, RowManifest, RunId, Tree, TreeEntry, TreeId,
};

pub use crate::reader::EntryReader;

/// The on-disk format this code reads and writes (`.srlm/FORMAT`). Format 2 keeps refs and the
/// staging area in files and packs with frame headers; format 1 (refs in sled) is upgraded on
/// the first open for writing.
pub const FORMAT_VERSION: u32 = 2;
pub(crate) const STORE_DIR: &str = ".srlm";
/// Folders and files of `.srlm/` that this crate manages; anything else there is reported by
/// fsck as unknown.
pub(crate) const KNOWN_ENTRIES: &[&str] = &[
    "FORMAT",
    "HEAD",
    "refs",
    "stage",
    "objects",
    "packs",
    "tmp",
    "hooks",
    "index",
    "fastadd",
    "lock",
    "lock.holder",
    "oplog",
    "pins",
    "cache",
    "journal",
    "remotes",
    "partial",
];

/// An open store. Holds the store lock (shared for readers, exclusive for writers) until dropped.
pub struct Store {
    pub(crate) workdir: PathBuf,
    pub(crate) dir: PathBuf,
    pub(crate) mode: LockMode,
    pub(crate) odb: LocalOdb,
    pub(crate) refs: FileRefs,
    pub(crate) stage_file: StageFile,
    /// The staging area, loaded on first use; `stage_dirty` until saved by [`Store::flush`].
    pub(crate) stage: Mutex<Option<Tree>>,
    pub(crate) stage_dirty: AtomicBool,
    /// Opened on first use: an unchanged re-add never opens sled (opening it costs an fsync).
    pub(crate) index: OnceLock<Index>,
    /// A reader that could not open the index (busy, read-only, damaged) does without it.
    pub(crate) index_unavailable: AtomicBool,
    /// Every run record, for readers without the index (lineage by scanning).
    pub(crate) runs_scan: OnceLock<Vec<(RunId, RunObject)>>,
    pub(crate) _lock: StoreLock,
}

/// Where HEAD points.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Head {
    /// On a branch (whose commit is `None` before the first commit).
    Branch {
        name: String,
        commit: Option<CommitId>,
    },
    /// Detached at a commit.
    Detached { commit: CommitId },
}

impl Head {
    pub fn commit(&self) -> Option<CommitId> {
        match self {
            Head::Branch { commit, .. } => *commit,
            Head::Detached { commit } => Some(*commit),
        }
    }
}

/// One file `add` recorded.
#[derive(Clone, Debug, Serialize)]
pub struct AddedFile {
    pub path: String,
    #[serde(flatten)]
    pub entry: TreeEntry,
    /// Unchanged since last hashed: the stat cache answered, nothing was read.
    pub cached: bool,
}

/// What `add` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AddReport {
    pub added: Vec<AddedFile>,
    /// Tracked paths that no longer exist, removed from the staging area.
    pub removed: Vec<String>,
    /// Bytes written to the new pack (after dedup and compression).
    pub stored_bytes: u64,
}

/// Progress of `add`, for a progress bar.
#[derive(Clone, Debug)]
pub enum AddProgress<'a> {
    /// About to hash a file of `size` bytes.
    File { path: &'a str, size: u64 },
}

/// How a path differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    pub change: ChangeKind,
}

/// `status`: staged changes (staging area vs HEAD), unstaged changes (working tree vs staging
/// area) and untracked files.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub head: Head,
    pub staged: Vec<Change>,
    pub unstaged: Vec<Change>,
    pub untracked: Vec<String>,
}

impl Status {
    pub fn is_clean(&self) -> bool {
        self.staged.is_empty() && self.unstaged.is_empty()
    }
}

/// Options of [`Store::commit`].
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub message: String,
    /// Defaults to `$SRLM_AUTHOR`, then `$USER`, then `unknown`.
    pub author: Option<String>,
    /// The run record that produced this commit ([`Store::put_run`]).
    pub run: Option<RunId>,
    /// Commit even when the tree equals the parent's.
    pub allow_empty: bool,
    /// Folders holding one of these markers are committed as units (one tree entry each).
    pub units: Vec<crate::UnitRule>,
}

/// What `checkout` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckoutReport {
    pub commit: Option<CommitId>,
    pub written: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formats")
}

impl Store {
    pub(crate) fn writable(&self, what: &'static str) -> Result<()> {
        match self.mode {
            LockMode::Write => Ok(()),
            LockMode::Read => Err(StoreError::ReadOnly(what)),
        }
    }

    /// The working directory (holds `.srlm`); tree paths are relative to it.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The store directory (`.srlm`).
    pub fn store_dir(&self) -> &Path {
        &self.dir
    }

    /// The hook scripts' folder (`.srlm/hooks`).
    pub fn hooks_dir(&self) -> PathBuf {
        self.dir.join("hooks")
    }

    /// A folder for an application's derived data (`.srlm/cache/NAME`): fsck knows it, gc may
    /// empty it; nothing in it may be the only copy of anything.
    pub fn cache_dir(&self, name: &str) -> PathBuf {
        self.dir.join("cache").join(name)
    }

    /// A folder for the resumable state of running stages (`.srlm/journal`): rows a killed
    /// stage finished, kept until its run is recorded. Not an object store: gc leaves it.
    pub fn journal_dir(&self) -> PathBuf {
        self.dir.join("journal")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub(crate) fn index(&self) -> Result<&Index> {
        if let Some(ix) = self.index.get() {
            return Ok(ix);
        }
        self.writable("updating the index")?;
        let odb = &self.odb;
        let rebuild = |ix: &Index| -> Result<()> {
            // Objects that do not decode are fsck's to report; the index skips them.
            for id in odb.list_objects()? {
                let Ok(Some(raw)) = odb.get_object(&id) else {
                    continue;
                };
                if tag_of(&raw) != Some("run") {
                    continue;
                }
                let Ok(r) = RunObject::decode(&id, &raw) else {
                    continue;
                };
                let run = RunId(id);
                for o in &r.outputs {
                    ix.link_run(&ix.produced, o, &run)?;
                }
                for i in &r.inputs {
                    ix.link_run(&ix.consumed, i, &run)?;
                }
            }
            Ok(())
        };
        let ix = Index::open(
            &self.dir.join("index"),
            &self.dir.join("fastadd"),
            Some(&rebuild),
        )?;
        let _ = self.index.set(ix);
        Ok(self.index.get().expect("just set"))
    }

    /// The index when it can be had without writing (a reader does without it otherwise).
    pub(crate) fn index_if_available(&self) -> Option<&Index> {
        if self.mode == LockMode::Write {
            return self.index().ok();
        }
        if let Some(ix) = self.index.get() {
            return Some(ix);
        }
        if self.index_unavailable.load(Ordering::SeqCst) || !self.dir.join("index").is_dir() {
            return None;
        }
        match Index::open(&self.dir.join("index"), &self.dir.join("fastadd"), None) {
            Ok(ix) => {
                let _ = self.index.set(ix);
                self.index.get()
            }
            Err(_) => {
                self.index_unavailable.store(true, Ordering::SeqCst);
                None
            }
        }
    }

    /// Make every change so far durable: the staging area, then the index (and its fast-add
    /// snapshot).
    pub(crate) fn flush(&self) -> Result<()> {
        let stage_changed = self.stage_dirty.swap(false, Ordering::SeqCst);
        if stage_changed {
            let t = self.stage_guard().clone().unwrap_or_default();
            self.stage_file.save(&t)?;
        }
        if let Some(ix) = self.index.get() {
            if ix.is_dirty() || stage_changed {
                ix.flush()?;
                ix.write_fast_add(&self.staged()?)?;
            }
        }
        Ok(())
    }

    fn stage_guard(&self) -> std::sync::MutexGuard<'_, Option<Tree>> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The staging area as a tree (what the next commit will hold).
    pub fn staged(&self) -> Result<Tree> {
        let mut g = self.stage_guard();
        if g.is_none() {
            *g = Some(self.stage_file.load()?);
        }
        Ok(g.clone().expect("loaded"))
    }

    /// Change the staging area (saved by the next [`Store::flush`]).
    pub(crate) fn stage_mut<T>(&self, f: impl FnOnce(&mut Tree) -> T) -> Result<T> {
        self.writable("staging")?;
        self.staged()?;
        if !self.stage_dirty.swap(true, Ordering::SeqCst) {
            // the fast-add snapshot vouches for staged entries: drop it before they change
            let _ = std::fs::remove_file(self.dir.join("fastadd"));
        }
        let mut g = self.stage_guard();
        Ok(f(g.as_mut().expect("loaded")))
    }

    // ---------------------------------------------------------------- objects

    /// Store opaque bytes (e.g. canonical JSON, a patch) as a loose object.
    pub fn put_object(&self, bytes: &[u8]) -> Result<ObjectId> {
        self.writable("storing an object")?;
        self.odb.put_object(bytes)
    }

    /// Read an object's bytes (verified against its id).
    pub fn get_object(&self, id: &ObjectId) -> Result<Vec<u8>> {
        self.odb
            .get_object(id)?
            .ok_or(StoreError::MissingObject(*id))
    }

    /// Whether a loose object or a packed piece with this id is present.
    pub fn has_object(&self, id: &ObjectId) -> Result<bool> {
        Ok(self.odb.has_object(id)? || self.odb.has_piece(id)?)
    }

    pub fn read_commit(&self, id: &CommitId) -> Result<Commit> {
        Commit::decode(&id.0, &self.get_object(&id.0)?)
    }

    pub fn read_tree(&self, id: &TreeId) -> Result<Tree> {
        Tree::decode(&id.0, &self.get_object(&id.0)?)
    }

    /// The tree of a commit.
    pub fn commit_tree(&self, id: &CommitId) -> Result<Tree> {
        self.read_tree(&self.read_commit(id)?.tree)
    }

    pub fn read_manifest(&self, id: &ManifestId) -> Result<Manifest> {
        Manifest::decode(&id.0, &self.get_object(&id.0)?)
    }

    /// The rows of a dataset, in order (ids and lengths), and its final-newline state.
    pub fn dataset_rows(&self, id: &ManifestId) -> Result<RowManifest> {
        match self.read_manifest(id)? {
            Manifest::Rows(r) => Ok(r),
            Manifest::Chunks(_) => Err(StoreError::Malformed {
                what: "dataset manifest",
                id: id.0,
                detail: "this is a binary file's chunk manifest, not a dataset".into(),
            }),
        }
    }

    /// A chunk's or a row's bytes (verified).
    pub fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        self.odb
            .get_piece(&id.0)?
            .ok_or(StoreError::MissingObject(id.0))
    }

    /// Read several rows, in the order given (consecutive rows of one pack frame are
    /// decompressed once).
    pub fn read_rows(&self, ids: &[BlobId]) -> Result<Vec<Vec<u8>>> {
        let mut packs = self.odb.packs();
        ids.iter()
            .map(|id| packs.read(&id.0)?.ok_or(StoreError::MissingObject(id.0)))
            .collect()
    }

    /// Stream a tracked file's bytes back, byte for byte. Every piece is verified before it is
    /// returned; corruption surfaces as an `InvalidData` I/O error.
    pub fn open_entry(&self, entry: &TreeEntry) -> Result<EntryReader<'_>> {
        EntryReader::new(self, self.read_manifest(&entry.id)?)
    }

    /// Check that every piece of a tracked file is present and intact without returning any
    /// bytes (so a caller can refuse before writing anything out).
    pub fn verify_entry(&self, entry: &TreeEntry) -> Result<()> {
        let m = self.read_manifest(&entry.id)?;
        for (id, len) in m.pieces() {
            let b = self.read_blob(id)?;
            if b.len() != *len as usize {
                return Err(StoreError::Corrupt {
                    id: id.0,
                    detail: "length differs from manifest".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EntryKind, ManifestId};
    use std::io::Read;
    use std::time::{Duration, SystemTime};

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::init(t.path()).unwrap();
        (t, s)
    }

    fn write(s: &Store, p: &str, bytes: &[u8]) {
        std::fs::write(s.workdir().join(p), bytes).unwrap();
    }

    fn commit(s: &mut Store, msg: &str, run: Option<RunId>) -> CommitId {
        let opts = CommitOptions {
            message: msg.into(),
            run,
            ..Default::default()
        };
        s.commit(&opts).unwrap()
    }

    #[test]
    fn dataset_rows_and_entries_round_trip() {
        let (_t, mut s) = store();
        let data = b"{\"a\":1}\r\n{\"b\":2}\n\n{\"a\":1}\r\n{\"c\":3}";
        write(&s, "d.jsonl", data);
        let wd = s.workdir().to_path_buf();
        let rep = s.add(&wd, &[PathBuf::from("d.jsonl")]).unwrap();
        let e = rep.added[0].entry.clone();
        assert_eq!(
            (e.kind, e.rows, e.size),
            (EntryKind::Dataset, Some(5), data.len() as u64)
        );
        let rows = s.dataset_rows(&e.id).unwrap();
        assert!(!rows.final_newline);
        assert_eq!(rows.rows[0].0, rows.rows[3].0, "equal rows have equal ids");
        let ids: Vec<BlobId> = rows.rows.iter().map(|r| r.0).collect();
        let bytes = s.read_rows(&ids).unwrap();
        assert_eq!(bytes[1], b"{\"b\":2}");
        assert_eq!(bytes[2], b"");
        let mut back = Vec::new();
        s.open_entry(&e).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(s.hash_file("d.jsonl").unwrap(), e);
        assert!(s.dataset_rows(&ManifestId(ObjectId::of(b"nope"))).is_err());
    }

    #[test]
    fn lineage_index_and_gc_of_run_records() {
        let (_t, mut s) = store();
        write(&s, "prompts.jsonl", b"{\"prompt\":\"p\"}\n");
        write(
            &s,
            "pairs.jsonl",
            b"{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\"}\n",
        );
        let wd = s.workdir().to_path_buf();
        let rep = s.add(&wd, &[PathBuf::from(".")]).unwrap();
        let id_of = |p: &str| rep.added.iter().find(|f| f.path == p).unwrap().entry.id.0;
        let (input, output) = (id_of("prompts.jsonl"), id_of("pairs.jsonl"));
        assert!(matches!(
            s.put_run(b"not json", &[], &[]),
            Err(StoreError::BadRunRecord(_))
        ));
        let patch = s.put_object(b"diff --git a/x b/x\n").unwrap();
        let record = canonical_json_for_test(&patch);
        let run = s.put_run(&record, &[input], &[output]).unwrap();
        assert_eq!(s.runs_producing(&output).unwrap(), vec![run]);
        assert_eq!(s.runs_consuming(&input).unwrap(), vec![run]);
        assert!(s.runs_producing(&input).unwrap().is_empty());
        let got = s.get_run(&run).unwrap();
        assert_eq!(
            (got.record, got.inputs, got.outputs),
            (record, vec![input], vec![output])
        );
        // a run nothing commits is garbage; one a commit names keeps the patch it mentions
        let stray = s.put_run(b"{\"stray\":true}", &[input], &[]).unwrap();
        let c = commit(&mut s, "pairs", Some(run));
        assert_eq!(s.read_commit(&c).unwrap().run, Some(run));
        let rep = s.gc(false).unwrap();
        assert_eq!(rep.loose_removed, 1);
        assert!(s.get_run(&stray).is_err());
        assert_eq!(
            s.runs_consuming(&input).unwrap(),
            vec![run],
            "stray run unindexed"
        );
        assert_eq!(s.get_object(&patch).unwrap(), b"diff --git a/x b/x\n");
        assert!(s.fsck().unwrap().is_clean());
        // a commit may not name a run that does not exist
        let bogus = RunId(ObjectId::of(b"bogus"));
        let opts = CommitOptions {
            message: "x".into(),
            run: Some(bogus),
            allow_empty: true,
            ..Default::default()
        };
        assert!(s.commit(&opts).is_err());
    }

    fn canonical_json_for_test(patch: &ObjectId) -> Vec<u8> {
        crate::canonical_json(&serde_json::json!({
            "stage": {"name": "pairs", "version": "1"},
            "code": {"dirty": true, "patch": patch.to_hex()},
        }))
    }

    #[test]
    fn unchanged_readd_does_not_open_the_index() {
        let (t, mut s) = store();
        write(&s, "m.gguf", &vec![5u8; 300_000]);
        // backdate the file past the racy margin instead of sleeping
        let f = std::fs::File::options()
            .write(true)
            .open(t.path().join("m.gguf"))
            .unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(5))
            .unwrap();
        let wd = s.workdir().to_path_buf();
        let first = s.add(&wd, &[PathBuf::from("m.gguf")]).unwrap();
        assert!(!first.added[0].cached);
        drop(s);
        let mut s = Store::open(&wd).unwrap();
        let again = s.add(&wd, &[PathBuf::from("m.gguf")]).unwrap();
        assert!(again.added[0].cached);
        assert_eq!(again.added[0].entry, first.added[0].entry);
        assert!(
            s.index.get().is_none(),
            "answered from the fast-add snapshot"
        );
        // a changed file (same size) goes the full way and is hashed again
        write(&s, "m.gguf", &vec![6u8; 300_000]);
        let changed = s.add(&wd, &[PathBuf::from("m.gguf")]).unwrap();
        assert!(!changed.added[0].cached);
        assert_ne!(changed.added[0].entry.id, first.added[0].entry.id);
        assert_eq!(
            s.staged().unwrap().entries["m.gguf"],
            changed.added[0].entry
        );
    }

    #[test]
    fn revisions_and_log() {
        let (_t, mut s) = store();
        let wd = s.workdir().to_path_buf();
        let mut ids = Vec::new();
        for i in 0..4 {
            write(&s, "f.txt", format!("{i}").as_bytes());
            s.add(&wd, &[PathBuf::from("f.txt")]).unwrap();
            ids.push(commit(&mut s, &format!("c{i}"), None));
        }
        assert_eq!(s.resolve("HEAD").unwrap(), ids[3]);
        assert_eq!(s.resolve("HEAD~3").unwrap(), ids[0]);
        assert_eq!(s.resolve("main~1^").unwrap(), ids[1]);
        assert_eq!(s.resolve(&ids[2].to_hex()[..10]).unwrap(), ids[2]);
        s.set_tag("AIFT(M1)", &ids[1], false).unwrap();
        assert_eq!(s.resolve("AIFT(M1)~1").unwrap(), ids[0]);
        let (c, p, e) = s.resolve_path("AIFT(M1):./f.txt").unwrap();
        assert_eq!((c, p.as_str(), e.size), (ids[1], "f.txt", 1));
        let log: Vec<CommitId> = s
            .log(&ids[3])
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(log, ids.iter().rev().copied().collect::<Vec<_>>());
        assert!(matches!(
            s.resolve("nope"),
            Err(StoreError::UnknownRevision(_))
        ));
        assert!(s.set_tag("a:b", &ids[0], false).is_err());
    }
}
