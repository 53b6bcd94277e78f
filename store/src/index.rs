//! The sled index: refs, the staging area, the stat cache and the reverse lineage index. Every
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
    pub refs: sled::Tree,
    pub stage: sled::Tree,
    pub stat: sled::Tree,
    pub produced: sled::Tree,
    pub consumed: sled::Tree,
}

pub(crate) fn sled_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Index {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

impl Index {
    pub fn open(path: &Path, fast_path: &Path) -> Result<Index> {
        let e = |err: sled::Error| sled_err(path, err);
        let config = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .cache_capacity(32 << 20);
        // sled releases its file lock only when its last background reference is dropped, a
        // moment after the previous `Db` of this process (or a process that just exited) went
        // away: retry briefly instead of failing. The store lock already serialises writers.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(io))
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(err) => return Err(e(err)),
            }
        };
        Ok(Index {
            refs: db.open_tree("refs").map_err(e)?,
            stage: db.open_tree("stage").map_err(e)?,
            stat: db.open_tree("stat").map_err(e)?,
            produced: db.open_tree("produced").map_err(e)?,
            consumed: db.open_tree("consumed").map_err(e)?,
            db,
            dirty: AtomicBool::new(false),
            fast_path: fast_path.to_path_buf(),
            path: path.to_path_buf(),
        })
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
        if self.dirty.swap(false, Ordering::SeqCst) {
            self.write_fast_add()?;
        }
        Ok(())
    }

    /// Write the fast-add snapshot: the stat cache entries that are trusted (not racy) and
    /// equal to what is staged.
    pub fn write_fast_add(&self) -> Result<()> {
        let mut fa = FastAdd::default();
        for kv in self.stat.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let Ok(se) = serde_json::from_slice::<StatEntry>(&v) else {
                continue;
            };
            let staged = self.stage.get(&k).map_err(|e| self.err(e))?;
            let staged: Option<TreeEntry> = staged.and_then(|v| serde_json::from_slice(&v).ok());
            if !se.racy && staged.as_ref() == Some(&se.entry) {
                fa.files.insert(
                    String::from_utf8_lossy(&k).into_owned(),
                    (se.stat, se.entry),
                );
            }
        }
        let dir = self
            .fast_path
            .parent()
            .expect("fast-add file is inside .srlm");
        let bytes = serde_json::to_vec(&fa).expect("fast-add serialises");
        crate::fsutil::write_atomic(&dir.join("tmp"), &self.fast_path, &bytes)
    }

    pub fn get_ref(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .refs
            .get(name)
            .map_err(|e| self.err(e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_ref(&self, name: &str, value: &str) -> Result<()> {
        self.mark_dirty();
        self.refs
            .insert(name, value.as_bytes())
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn remove_ref(&self, name: &str) -> Result<bool> {
        self.mark_dirty();
        Ok(self.refs.remove(name).map_err(|e| self.err(e))?.is_some())
    }

    /// All refs with a prefix (e.g. `refs/tags/`), names without the prefix, sorted.
    pub fn refs_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for kv in self.refs.scan_prefix(prefix) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            out.push((
                String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Ok(out)
    }

    pub fn stage_entries(&self) -> Result<Vec<(String, TreeEntry)>> {
        let mut out = Vec::new();
        for kv in self.stage.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let entry: TreeEntry = serde_json::from_slice(&v).map_err(|e| self.err(e))?;
            out.push((String::from_utf8_lossy(&k).into_owned(), entry));
        }
        Ok(out)
    }

    pub fn stage_put(&self, path: &str, entry: &TreeEntry) -> Result<()> {
        self.mark_dirty();
        let v = serde_json::to_vec(entry).expect("entry serialises");
        self.stage.insert(path, v).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn stage_remove(&self, path: &str) -> Result<()> {
        self.mark_dirty();
        self.stage.remove(path).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn stage_clear(&self) -> Result<()> {
        self.mark_dirty();
        self.stage.clear().map_err(|e| self.err(e))
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
