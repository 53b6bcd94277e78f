//! The sled index: derived data only, the stat cache and the reverse lineage index (refs and the
//! staging area are files: see `refs` and `stage`), rebuilt from the objects when lost. Every
//! mutation is followed by `flush` (fsync) before the command reports success.
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::objects::TreeEntry;
use crate::{ObjectId, RunId};

/// What the stat cache remembers of a file when it was last hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StatKey {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
}

impl StatKey {
    pub fn of(md: &std::fs::Metadata) -> StatKey {
        use std::os::unix::fs::MetadataExt;
        StatKey {
            size: md.len(),
            mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
            ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
            ino: md.ino(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StatEntry {
    pub stat: StatKey,
    /// The file was modified too close to when it was hashed to trust its mtime (a later write
    /// within the same timestamp tick would go unnoticed): re-hash next time.
    pub racy: bool,
    pub entry: TreeEntry,
}

/// A snapshot of the stat cache entries that are staged unchanged, written after every index
/// flush and deleted before every index change. With it, re-adding unchanged files reads one
/// small file instead of opening sled (whose open costs an fsync). Absent = unknown: use sled.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct FastAdd {
    pub files: std::collections::BTreeMap<String, (StatKey, TreeEntry)>,
}

impl FastAdd {
    pub fn read(path: &Path) -> Option<FastAdd> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

pub(crate) struct Index {
    path: PathBuf,
    db: sled::Db,
    /// Changed since the last flush.
    dirty: AtomicBool,
    /// The fast-add snapshot (see [`FastAdd`]).
    fast_path: PathBuf,
    pub stat: sled::Tree,
    pub produced: sled::Tree,
    pub consumed: sled::Tree,
    meta: sled::Tree,
}

pub(crate) fn sled_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Index {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// What format 1 kept in sled beside the derived data: refs and the staging area.
pub(crate) struct LegacyIndex {
    pub refs: Vec<(String, String)>,
    pub stage: Vec<(String, TreeEntry)>,
}

fn open_db(path: &Path, wait: bool) -> std::result::Result<sled::Db, sled::Error> {
    let config = sled::Config::new()
        .path(path)
        .flush_every_ms(None)
        .cache_capacity(32 << 20);
    // sled releases its file lock only when its last background reference is dropped, a
    // moment after the previous `Db` of this process (or a process that just exited) went
    // away: a writer retries briefly instead of failing. The store lock already serialises
    // writers; a reader does not wait (it can do without the index).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match config.open() {
            Err(sled::Error::Io(io))
                if wait
                    && io.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Builds a fresh index's contents from the objects.
pub(crate) type Rebuild<'a> = &'a dyn Fn(&Index) -> Result<()>;

impl Index {
    /// Open the index. It holds only derived data, so when it is missing or unreadable (a
    /// crash on a full disk can leave sled unable to open) a writer (`rebuild` given) deletes
    /// it and builds it again with `rebuild`; a reader gets the error and does without.
    pub fn open(path: &Path, fast_path: &Path, rebuild: Option<Rebuild<'_>>) -> Result<Index> {
        let fresh = !path.exists();
        let db = match open_db(path, rebuild.is_some()) {
            Ok(db) => db,
            Err(sled::Error::Io(io)) if io.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(sled_err(path, io))
            }
            Err(err) if rebuild.is_some() => {
                let _ = std::fs::remove_file(fast_path);
                std::fs::remove_dir_all(path).map_err(|e| {
                    sled_err(path, format!("{err}; removing it to rebuild failed: {e}"))
                })?;
                return Index::open(path, fast_path, rebuild);
            }
            Err(err) => return Err(sled_err(path, err)),
        };
        let e = |err: sled::Error| sled_err(path, err);
        let ix = Index {
            stat: db.open_tree("stat").map_err(e)?,
            produced: db.open_tree("produced").map_err(e)?,
            consumed: db.open_tree("consumed").map_err(e)?,
            meta: db.open_tree("meta").map_err(e)?,
            db,
            dirty: AtomicBool::new(false),
            fast_path: fast_path.to_path_buf(),
            path: path.to_path_buf(),
        };
        let built = ix.meta.get("built").map_err(e)?.is_some();
        if let (Some(rebuild), false) = (rebuild, built) {
            // A new store's index, or one deleted or lost: derive it from the objects.
            rebuild(&ix)?;
            let what = if fresh { "new" } else { "rebuilt" };
            ix.meta.insert("built", what).map_err(e)?;
            ix.mark_dirty();
            ix.flush()?;
        }
        Ok(ix)
    }

    /// Refs and staging area of a format-1 index (moved to files by the upgrade), then
    /// dropped from sled.
    pub fn take_legacy(&self) -> Result<LegacyIndex> {
        let e = |err: sled::Error| self.err(err);
        let mut out = LegacyIndex {
            refs: Vec::new(),
            stage: Vec::new(),
        };
        for kv in self.db.open_tree("refs").map_err(e)?.iter() {
            let (k, v) = kv.map_err(e)?;
            out.refs.push((
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        for kv in self.db.open_tree("stage").map_err(e)?.iter() {
            let (k, v) = kv.map_err(e)?;
            let entry: TreeEntry = serde_json::from_slice(&v).map_err(|x| self.err(x))?;
            out.stage
                .push((String::from_utf8_lossy(&k).into_owned(), entry));
        }
        Ok(out)
    }

    /// Forget the format-1 refs and staging area (after they were written as files).
    pub fn drop_legacy(&self) -> Result<()> {
        for t in ["refs", "stage"] {
            self.db.drop_tree(t).map_err(|e| self.err(e))?;
        }
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Note an unflushed change (callers that write to a tree directly).
    pub fn mark_dirty(&self) {
        if !self.dirty.swap(true, Ordering::SeqCst) {
            // The snapshot goes before the first change, so a crash can only leave none.
            let _ = std::fs::remove_file(&self.fast_path);
        }
    }

    pub fn err(&self, e: impl std::fmt::Display) -> StoreError {
        sled_err(&self.path, e)
    }

    /// Make every change so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| self.err(e))?;
        self.dirty.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Whether there are unflushed changes.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// Write the fast-add snapshot: the stat cache entries that are trusted (not racy) and
    /// equal to what is staged.
    pub fn write_fast_add(&self, stage: &crate::Tree) -> Result<()> {
        let mut fa = FastAdd::default();
        for kv in self.stat.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(se) = serde_json::from_slice::<StatEntry>(&v) else {
                continue;
            };
            let path = String::from_utf8_lossy(&k).into_owned();
            if !se.racy && stage.entries.get(&path) == Some(&se.entry) {
                fa.files.insert(path, (se.stat, se.entry));
            }
        }
        let dir = self
            .fast_path
            .parent()
            .expect("fast-add file is inside .srlm");
        let bytes = serde_json::to_vec(&fa).expect("fast-add serialises");
        crate::fsutil::write_atomic(&dir.join("tmp"), &self.fast_path, &bytes)
    }

    pub fn stat_get(&self, path: &str) -> Result<Option<StatEntry>> {
        match self.stat.get(path).map_err(|e| self.err(e))? {
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
            None => Ok(None),
        }
    }

    pub fn stat_put(&self, path: &str, e: &StatEntry) -> Result<()> {
        self.mark_dirty();
        let v = serde_json::to_vec(e).expect("stat entry serialises");
        self.stat.insert(path, v).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn link_run(&self, tree: &sled::Tree, obj: &ObjectId, run: &RunId) -> Result<()> {
        self.mark_dirty();
        let mut k = obj.0.to_vec();
        k.extend_from_slice(&run.0 .0);
        tree.insert(k, &b""[..]).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn runs_of(&self, tree: &sled::Tree, obj: &ObjectId) -> Result<Vec<RunId>> {
        let mut out = Vec::new();
        for kv in tree.scan_prefix(obj.0) {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            out.push(RunId(ObjectId(
                k[32..64].try_into().map_err(|e| self.err(e))?,
            )));
        }
        Ok(out)
    }
}
