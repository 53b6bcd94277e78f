//! Opening a store: `init`, `discover` / `open` for writing (exclusive lock, the format-1
//! upgrade, removal of what killed writers left in `.srlm/tmp`), `discover_read` / `open_read`
//! for reading only (shared lock, nothing written), and scratch folders.
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use crate::error::{IoContext, Result, StoreError};
use crate::lock::LockMode;
use crate::odb::LocalOdb;
use crate::refs::{FileRefs, RefStore};
use crate::stage::StageFile;
use crate::store::{FORMAT_VERSION, STORE_DIR};
use crate::{Store, Tree};

fn read_format(workdir: &Path) -> Result<u32> {
    let sd = workdir.join(STORE_DIR);
    let fp = sd.join("FORMAT");
    let text = std::fs::read_to_string(&fp).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && !sd.is_dir() {
            StoreError::NotAStore(workdir.to_path_buf())
        } else {
            StoreError::BadFormat {
                path: fp.clone(),
                detail: e.to_string(),
            }
        }
    })?;
    let v = text
        .trim()
        .strip_prefix("srlm-store ")
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| StoreError::BadFormat {
            path: fp.clone(),
            detail: format!("expected `srlm-store N`, found {:?}", text.trim()),
        })?;
    if v > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            path: workdir.to_path_buf(),
            found: v,
            supported: FORMAT_VERSION,
        });
    }
    Ok(v)
}

impl Store {
    /// Create a store in `dir` (created if needed) and open it.
    pub fn init(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).at(dir)?;
        let workdir = dir.canonicalize().at(dir)?;
        let sd = workdir.join(STORE_DIR);
        if sd.join("FORMAT").exists() {
            return Err(StoreError::AlreadyAStore(workdir));
        }
        for sub in [
            "objects",
            "packs",
            "tmp",
            "hooks",
            "refs/heads",
            "refs/tags",
        ] {
            std::fs::create_dir_all(sd.join(sub)).at(sd.join(sub))?;
        }
        {
            let store = Store::open_unchecked(&workdir, LockMode::Write)?;
            if store.refs.read("HEAD")?.is_none() {
                store
                    .refs
                    .update("HEAD", None, Some("ref: refs/heads/main"))?;
            }
        }
        // FORMAT last: a directory without it is not a store yet.
        crate::fsutil::write_atomic(
            &sd.join("tmp"),
            &sd.join("FORMAT"),
            format!("srlm-store {FORMAT_VERSION}\n").as_bytes(),
        )?;
        let s = Store::open(&workdir)?;
        s.log_op("init", serde_json::json!({}))?;
        Ok(s)
    }

    /// The working directory (holding `.srlm`) that contains `start`, searching upwards.
    fn find(start: &Path) -> Result<PathBuf> {
        let start_c = start.canonicalize().at(start)?;
        let mut d: Option<&Path> = Some(&start_c);
        while let Some(dir) = d {
            if dir.join(STORE_DIR).is_dir() {
                return Ok(dir.to_path_buf());
            }
            d = dir.parent();
        }
        Err(StoreError::NotAStore(start_c))
    }

    /// Open, for writing, the store whose working directory contains `start`.
    pub fn discover(start: &Path) -> Result<Store> {
        Store::open(&Store::find(start)?)
    }

    /// Open, for reading only, the store whose working directory contains `start`.
    pub fn discover_read(start: &Path) -> Result<Store> {
        Store::open_read(&Store::find(start)?)
    }

    /// Open the store of working directory `workdir` (which holds `.srlm`) for writing: the
    /// lock is exclusive, a format-1 store is upgraded, temp leftovers of killed processes are
    /// removed.
    pub fn open(workdir: &Path) -> Result<Store> {
        let v = read_format(workdir)?;
        let s = Store::open_unchecked(workdir, LockMode::Write)?;
        s.clean_tmp();
        if v == 1 {
            s.upgrade_v1()?;
        }
        Ok(s)
    }

    /// Open for reading only: the lock is shared (other readers run beside it), nothing under
    /// `.srlm/` is written, so a read-only store or a full disk can still be read. Methods that
    /// change the store fail with [`StoreError::ReadOnly`].
    pub fn open_read(workdir: &Path) -> Result<Store> {
        if read_format(workdir)? == 1 {
            // the one-time upgrade needs a writer; without write access say so
            drop(Store::open(workdir).map_err(|e| match e {
                StoreError::Io { err, .. }
                    if err.kind() == std::io::ErrorKind::PermissionDenied
                        || err.raw_os_error() == Some(30) =>
                {
                    StoreError::UpgradeNeeded(workdir.to_path_buf())
                }
                e => e,
            })?);
        }
        Store::open_unchecked(workdir, LockMode::Read)
    }

    fn open_unchecked(workdir: &Path, mode: LockMode) -> Result<Store> {
        let workdir = workdir.canonicalize().at(workdir)?;
        let dir = workdir.join(STORE_DIR);
        let lock = crate::lock::acquire(&dir.join("lock"), mode, crate::lock::timeout_from_env()?)?;
        let tmp = dir.join("tmp");
        Ok(Store {
            odb: LocalOdb::new(&dir),
            refs: FileRefs::new(&dir, &tmp),
            stage_file: StageFile::new(&dir, &tmp),
            stage: Mutex::new(None),
            stage_dirty: AtomicBool::new(false),
            mode,
            workdir,
            dir,
            index: OnceLock::new(),
            index_unavailable: AtomicBool::new(false),
            runs_scan: OnceLock::new(),
            _lock: lock,
        })
    }

    /// Format 1 kept refs and the staging area in sled: write them as files, then FORMAT 2.
    /// Killed half-way, FORMAT still says 1 and the next open does it again (it only copies).
    fn upgrade_v1(&self) -> Result<()> {
        let legacy = self.index()?.take_legacy()?;
        for (name, value) in &legacy.refs {
            let cur = self.refs.read(name)?;
            if cur.as_deref() != Some(value.as_str()) {
                self.refs.update(name, cur.as_deref(), Some(value))?;
            }
        }
        if self.refs.read("HEAD")?.is_none() {
            self.refs
                .update("HEAD", None, Some("ref: refs/heads/main"))?;
        }
        let stage = Tree {
            entries: legacy.stage.into_iter().collect(),
            units: Default::default(),
        };
        self.stage_file.save(&stage)?;
        // format 1's application file for a run staged with no commit becomes a pin
        let legacy_pending = self.dir.join("pending-run");
        if let Ok(text) = std::fs::read_to_string(&legacy_pending) {
            if let Ok(id) = text.trim().parse::<crate::ObjectId>() {
                self.set_pin("pending-run", Some(&id))?;
            }
            let _ = std::fs::remove_file(&legacy_pending);
        }
        crate::fsutil::write_atomic(
            &self.tmp_dir(),
            &self.dir.join("FORMAT"),
            format!("srlm-store {FORMAT_VERSION}\n").as_bytes(),
        )?;
        self.index()?.drop_legacy()?;
        self.log_op(
            "upgrade",
            serde_json::json!({"from": 1, "to": FORMAT_VERSION}),
        )
    }

    /// Remove what killed writers left in `.srlm/tmp` (temp files, half-written packs, staged
    /// copies for hooks, stage scratch folders), under the exclusive lock, so nothing is still
    /// writing there — except a scratch folder (`proc-PID-…`) whose process is alive: it may
    /// be between two opens of the store (a hook or a stage is running).
    fn clean_tmp(&self) {
        let Ok(rd) = std::fs::read_dir(self.tmp_dir()) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("proc-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            {
                if Path::new(&format!("/proc/{pid}")).exists() {
                    continue;
                }
            }
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }

    /// A scratch folder of this process in `.srlm/tmp` (for the bytes a hook reads, a stage's
    /// inputs and outputs), removed when the returned guard drops or, after a kill, by the next
    /// writer; on the store's file system, so its files can be renamed into place.
    pub fn scratch_dir(&self, what: &str) -> Result<tempfile::TempDir> {
        self.writable("making a scratch folder")?;
        tempfile::Builder::new()
            .prefix(&format!("proc-{}-{what}-", std::process::id()))
            .tempdir_in(self.tmp_dir())
            .at(self.tmp_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommitOptions;

    #[test]
    fn a_format_1_store_is_upgraded_on_its_first_write_open() {
        let t = tempfile::tempdir().unwrap();
        let wd = t.path().canonicalize().unwrap();
        let (c, stage) = {
            let mut s = Store::init(&wd).unwrap();
            std::fs::write(wd.join("a.jsonl"), b"{\"a\":1}\n").unwrap();
            s.add(&wd, &[PathBuf::from("a.jsonl")]).unwrap();
            let c = s
                .commit(&CommitOptions {
                    message: "one".into(),
                    ..Default::default()
                })
                .unwrap();
            s.set_tag("AIFT(M1)", &c, false).unwrap();
            (c, s.staged().unwrap())
        };
        // rewrite it as format 1 kept it: refs and the staging area in sled, no files
        let sd = wd.join(STORE_DIR);
        {
            let db = sled::open(sd.join("index")).unwrap();
            let refs = db.open_tree("refs").unwrap();
            refs.insert("HEAD", "ref: refs/heads/main").unwrap();
            refs.insert("refs/heads/main", c.to_hex().as_bytes())
                .unwrap();
            refs.insert("refs/tags/AIFT(M1)", c.to_hex().as_bytes())
                .unwrap();
            let st = db.open_tree("stage").unwrap();
            for (p, e) in &stage.entries {
                st.insert(p.as_bytes(), serde_json::to_vec(e).unwrap())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        std::fs::remove_dir_all(sd.join("refs")).unwrap();
        std::fs::remove_file(sd.join("HEAD")).unwrap();
        std::fs::remove_file(sd.join("stage")).unwrap();
        std::fs::write(sd.join("FORMAT"), "srlm-store 1\n").unwrap();
        std::fs::write(sd.join("pending-run"), format!("{}\n", c.to_hex())).unwrap();
        // a reader opens it too: the upgrade runs first
        let s = Store::open_read(&wd).unwrap();
        assert_eq!(s.resolve("AIFT(M1)").unwrap(), c);
        assert_eq!(s.resolve("HEAD").unwrap(), c);
        assert_eq!(s.staged().unwrap(), stage);
        assert_eq!(s.pin("pending-run").unwrap(), Some(c.0));
        assert!(!sd.join("pending-run").exists());
        assert_eq!(
            std::fs::read_to_string(sd.join("FORMAT")).unwrap(),
            format!("srlm-store {FORMAT_VERSION}\n")
        );
        assert!(s.fsck().unwrap().is_clean());
    }
}
