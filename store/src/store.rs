//! The [`Store`]: opening, staging, committing, revisions, reading back, refs, lineage, checkout.
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{IoContext, Result, StoreError};
use crate::index::{Index, StatEntry, StatKey};
use crate::ingest::{chunk_file, split_rows, NullSink, PackSink, Sink};
use crate::lock::StoreLock;
use crate::objects::{tag_of, Manifest, RunObject};
use crate::pack::{PackWriter, Packs};
use crate::{
    BlobId, Commit, CommitId, EntryKind, ManifestId, ObjectId, RowManifest, RunId, Tree, TreeEntry,
    TreeId,
};

/// The on-disk format this code reads and writes (`.srlm/FORMAT`).
pub const FORMAT_VERSION: u32 = 1;
const STORE_DIR: &str = ".srlm";
/// A file modified less than this before it was hashed is "racy": its stat is not trusted.
const RACY_MARGIN: Duration = Duration::from_millis(50);

/// An open store. Holds the store lock until dropped.
pub struct Store {
    workdir: PathBuf,
    dir: PathBuf,
    index: Index,
    packs: Mutex<Packs>,
    _lock: StoreLock,
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
}

/// What `checkout` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckoutReport {
    pub commit: Option<CommitId>,
    pub written: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formats")
}

fn validate_ref_name(kind: &'static str, name: &str) -> Result<()> {
    let bad = |reason| {
        Err(StoreError::BadRefName {
            kind,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name == "HEAD" || name == "@" {
        return bad("reserved");
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "~^:\\*?[".contains(c))
    {
        return bad("no whitespace or any of ~ ^ : \\ * ? [");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") || name.contains("..") {
        return bad("no leading, trailing or doubled '/' and no '..'");
    }
    if name.starts_with('-') {
        return bad("must not start with '-'");
    }
    Ok(())
}

impl Store {
    // ---------------------------------------------------------------- opening

    /// Create a store in `dir` (created if needed) and open it.
    pub fn init(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).at(dir)?;
        let workdir = dir.canonicalize().at(dir)?;
        let sd = workdir.join(STORE_DIR);
        if sd.join("FORMAT").exists() {
            return Err(StoreError::AlreadyAStore(workdir));
        }
        for sub in ["objects", "packs", "tmp", "hooks"] {
            std::fs::create_dir_all(sd.join(sub)).at(sd.join(sub))?;
        }
        {
            let store = Store::open_unchecked(&workdir)?;
            if store.index.get_ref("HEAD")?.is_none() {
                store.index.set_ref("HEAD", "ref: refs/heads/main")?;
                store.index.flush()?;
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

    /// Open the store whose working directory contains `start` (searching upwards).
    pub fn discover(start: &Path) -> Result<Store> {
        let start_c = start.canonicalize().at(start)?;
        let mut d: Option<&Path> = Some(&start_c);
        while let Some(dir) = d {
            if dir.join(STORE_DIR).is_dir() {
                return Store::open(dir);
            }
            d = dir.parent();
        }
        Err(StoreError::NotAStore(start_c))
    }

    /// Open the store of working directory `workdir` (which holds `.srlm`).
    pub fn open(workdir: &Path) -> Result<Store> {
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
        Store::open_unchecked(workdir)
    }

    fn open_unchecked(workdir: &Path) -> Result<Store> {
        let workdir = workdir.canonicalize().at(workdir)?;
        let dir = workdir.join(STORE_DIR);
        let lock = crate::lock::acquire(&dir.join("lock"), crate::lock::timeout_from_env())?;
        let index = Index::open(&dir.join("index"))?;
        Ok(Store {
            packs: Mutex::new(Packs::new(dir.join("packs"))),
            workdir,
            dir,
            index,
            _lock: lock,
        })
    }

    /// The working directory (holds `.srlm`); tree paths are relative to it.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The store directory (`.srlm`).
    pub fn store_dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn objects_dir(&self) -> PathBuf {
        self.dir.join("objects")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub(crate) fn packs(&self) -> MutexGuard<'_, Packs> {
        self.packs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    // ---------------------------------------------------------------- objects

    /// Store opaque bytes (e.g. canonical JSON, a patch) as a loose object.
    pub fn put_object(&self, bytes: &[u8]) -> Result<ObjectId> {
        crate::loose::put(&self.objects_dir(), &self.tmp_dir(), bytes)
    }

    /// Read an object's bytes (verified against its id).
    pub fn get_object(&self, id: &ObjectId) -> Result<Vec<u8>> {
        crate::loose::get(&self.objects_dir(), id)?.ok_or(StoreError::MissingObject(*id))
    }

    /// Whether a loose object or a packed piece with this id is present.
    pub fn has_object(&self, id: &ObjectId) -> Result<bool> {
        Ok(crate::loose::path_of(&self.objects_dir(), id).exists() || self.packs().contains(id)?)
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
        self.packs()
            .read(&id.0)?
            .ok_or(StoreError::MissingObject(id.0))
    }

    /// Read several rows, in the order given (consecutive rows of one pack frame are
    /// decompressed once).
    pub fn read_rows(&self, ids: &[BlobId]) -> Result<Vec<Vec<u8>>> {
        let mut packs = self.packs();
        ids.iter()
            .map(|id| packs.read(&id.0)?.ok_or(StoreError::MissingObject(id.0)))
            .collect()
    }

    /// Stream a tracked file's bytes back, byte for byte. Every piece is verified before it is
    /// returned; corruption surfaces as an `InvalidData` I/O error.
    pub fn open_entry(&self, entry: &TreeEntry) -> Result<EntryReader<'_>> {
        let m = self.read_manifest(&entry.id)?;
        let (pieces, rows, final_newline) = match m {
            Manifest::Chunks(c) => (c.chunks, false, false),
            Manifest::Rows(r) => (r.rows, true, r.final_newline),
        };
        Ok(EntryReader {
            store: self,
            pieces,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            rows,
            final_newline,
        })
    }

    // ---------------------------------------------------------------- lineage

    /// Store a run record (opaque JSON bytes, canonical by the caller's choice: see
    /// [`crate::canonical_json`]) and index it as producing `outputs` and consuming `inputs`.
    pub fn put_run(
        &self,
        record: &[u8],
        inputs: &[ObjectId],
        outputs: &[ObjectId],
    ) -> Result<RunId> {
        serde_json::from_slice::<serde_json::Value>(record)
            .map_err(|e| StoreError::BadRunRecord(e.to_string()))?;
        let obj = RunObject {
            record: record.to_vec(),
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
        };
        let run = RunId(self.put_object(&obj.encode())?);
        for o in outputs {
            self.index.link_run(&self.index.produced, o, &run)?;
        }
        for i in inputs {
            self.index.link_run(&self.index.consumed, i, &run)?;
        }
        self.index.flush()?;
        Ok(run)
    }

    pub fn get_run(&self, id: &RunId) -> Result<RunObject> {
        RunObject::decode(&id.0, &self.get_object(&id.0)?)
    }

    /// Runs that list `id` among their outputs.
    pub fn runs_producing(&self, id: &ObjectId) -> Result<Vec<RunId>> {
        self.index.runs_of(&self.index.produced, id)
    }

    /// Runs that list `id` among their inputs.
    pub fn runs_consuming(&self, id: &ObjectId) -> Result<Vec<RunId>> {
        self.index.runs_of(&self.index.consumed, id)
    }

    // ---------------------------------------------------------------- staging

    /// Tree path of a user path (relative to `cwd`).
    pub fn tree_path(&self, cwd: &Path, user: &Path) -> Result<String> {
        crate::paths::to_tree_path(&self.workdir, cwd, user)
    }

    /// The staging area as a tree (what the next commit will hold).
    pub fn staged(&self) -> Result<Tree> {
        Ok(Tree {
            entries: self.index.stage_entries()?.into_iter().collect(),
        })
    }

    /// Stage files (paths relative to `cwd`; directories recursively). A tracked path that no
    /// longer exists is unstaged. Unchanged files cost a stat.
    pub fn add(&mut self, cwd: &Path, paths: &[PathBuf]) -> Result<AddReport> {
        self.add_with(cwd, paths, &mut |_| {})
    }

    /// [`Store::add`] with a progress callback.
    pub fn add_with(
        &mut self,
        cwd: &Path,
        paths: &[PathBuf],
        progress: &mut dyn FnMut(AddProgress),
    ) -> Result<AddReport> {
        let staged: BTreeMap<String, TreeEntry> = self.index.stage_entries()?.into_iter().collect();
        let mut files = BTreeSet::new();
        let mut report = AddReport::default();
        for p in paths {
            let tp = self.tree_path(cwd, p)?;
            let abs = self.abs(&tp);
            match std::fs::symlink_metadata(&abs) {
                Ok(md) if md.is_dir() => self.walk(&tp, &mut files)?,
                Ok(md) if md.is_file() => {
                    files.insert(tp);
                }
                Ok(_) => {
                    return Err(StoreError::BadPath {
                        path: p.display().to_string(),
                        reason: "not a regular file or directory".into(),
                    })
                }
                Err(_) => {
                    let under: Vec<&String> = staged
                        .keys()
                        .filter(|k| tp.is_empty() || *k == &tp || k.starts_with(&format!("{tp}/")))
                        .collect();
                    if under.is_empty() {
                        return Err(StoreError::Missing(p.clone()));
                    }
                    report.removed.extend(under.into_iter().cloned());
                }
            }
        }
        let mut writer = PackWriter::new(&self.tmp_dir())?;
        let mut pending: Vec<(String, Manifest, EntryKind, StatKey, bool)> = Vec::new();
        {
            let mut packs = self.packs();
            let mut sink = PackSink::new(&mut writer, &mut packs);
            for tp in &files {
                let abs = self.workdir.join(tp);
                let (md, before) = stat_now(&abs)?;
                let key = StatKey::of(&md);
                if let Some(e) = self.cached_entry(tp, &key)? {
                    report.added.push(AddedFile {
                        path: tp.clone(),
                        entry: e,
                        cached: true,
                    });
                    continue;
                }
                progress(AddProgress::File {
                    path: tp,
                    size: md.len(),
                });
                let kind = EntryKind::for_path(tp);
                let m = ingest(&abs, kind, &mut sink)?;
                let after = StatKey::of(&std::fs::symlink_metadata(&abs).at(&abs)?);
                let racy = after != key || is_racy(&md, before);
                pending.push((tp.clone(), m, kind, key, racy));
            }
        }
        report.stored_bytes = writer.bytes_written;
        // Pieces are durable before the manifests naming them, manifests before the index.
        if writer
            .finish(&self.dir.join("packs"), &self.tmp_dir())?
            .is_some()
        {
            self.packs().reload();
        }
        for (tp, m, kind, key, racy) in pending {
            let entry = self.put_manifest(&m, kind)?;
            self.index.stat_put(
                tp.as_str(),
                &StatEntry {
                    stat: key,
                    racy,
                    entry: entry.clone(),
                },
            )?;
            report.added.push(AddedFile {
                path: tp,
                entry,
                cached: false,
            });
        }
        for f in &report.added {
            self.index.stage_put(&f.path, &f.entry)?;
        }
        for r in &report.removed {
            self.index.stage_remove(r)?;
        }
        self.index.flush()?;
        report.added.sort_by(|a, b| a.path.cmp(&b.path));
        self.log_op(
            "add",
            serde_json::json!({
                "paths": report.added.iter().map(|f| &f.path).collect::<Vec<_>>(),
                "removed": report.removed,
            }),
        )?;
        Ok(report)
    }

    fn put_manifest(&self, m: &Manifest, kind: EntryKind) -> Result<TreeEntry> {
        let id = ManifestId(self.put_object(&m.encode())?);
        let rows = match m {
            Manifest::Rows(r) => Some(r.rows.len() as u64),
            Manifest::Chunks(_) => None,
        };
        Ok(TreeEntry {
            kind,
            id,
            size: m.size(),
            rows,
        })
    }

    /// The entry the stat cache holds for a path, if the file's stat still matches and the
    /// content is really in the store.
    fn cached_entry(&self, tp: &str, key: &StatKey) -> Result<Option<TreeEntry>> {
        match self.index.stat_get(tp)? {
            Some(se)
                if !se.racy
                    && se.stat == *key
                    && crate::loose::path_of(&self.objects_dir(), &se.entry.id.0).exists() =>
            {
                Ok(Some(se.entry))
            }
            _ => Ok(None),
        }
    }

    /// Hash a working-tree file without storing it (the entry it would get).
    pub fn hash_file(&self, tp: &str) -> Result<TreeEntry> {
        let abs = self.abs(tp);
        let md = std::fs::symlink_metadata(&abs).at(&abs)?;
        if let Some(e) = self.cached_entry(tp, &StatKey::of(&md))? {
            return Ok(e);
        }
        let kind = EntryKind::for_path(tp);
        let m = ingest(&abs, kind, &mut NullSink)?;
        let rows = match &m {
            Manifest::Rows(r) => Some(r.rows.len() as u64),
            Manifest::Chunks(_) => None,
        };
        Ok(TreeEntry {
            kind,
            id: ManifestId(ObjectId::of(&m.encode())),
            size: m.size(),
            rows,
        })
    }

    fn abs(&self, tp: &str) -> PathBuf {
        if tp.is_empty() {
            self.workdir.clone()
        } else {
            self.workdir.join(tp)
        }
    }

    fn ignored(&self, tp: &str) -> bool {
        tp == ".srlm" || tp == ".git" || tp.starts_with(".srlm-tmp")
    }

    /// All regular files under a tree path (symlinks are an error).
    fn walk(&self, tp: &str, out: &mut BTreeSet<String>) -> Result<()> {
        let dir = self.abs(tp);
        let mut names: Vec<String> = Vec::new();
        for e in std::fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for n in names {
            let child = if tp.is_empty() {
                n.clone()
            } else {
                format!("{tp}/{n}")
            };
            if self.ignored(&child) {
                continue;
            }
            let md = std::fs::symlink_metadata(self.abs(&child)).at(self.abs(&child))?;
            if md.file_type().is_symlink() {
                return Err(StoreError::BadPath {
                    path: child,
                    reason: "symlinks are not supported (track the file itself)".into(),
                });
            } else if md.is_dir() {
                self.walk(&child, out)?;
            } else if md.is_file() {
                out.insert(child);
            }
        }
        Ok(())
    }

    /// Compare HEAD, the staging area and the working tree.
    pub fn status(&self) -> Result<Status> {
        let head = self.head()?;
        let head_tree = match head.commit() {
            Some(c) => self.commit_tree(&c)?,
            None => Tree::default(),
        };
        let stage = self.staged()?;
        let staged = diff_trees(&head_tree, &stage);
        let mut unstaged = Vec::new();
        for (p, e) in &stage.entries {
            let abs = self.abs(p);
            match std::fs::symlink_metadata(&abs) {
                Err(_) => unstaged.push(Change {
                    path: p.clone(),
                    change: ChangeKind::Deleted,
                }),
                Ok(md) if !md.is_file() => unstaged.push(Change {
                    path: p.clone(),
                    change: ChangeKind::Modified,
                }),
                Ok(_) => {
                    if self.hash_file(p)?.id != e.id {
                        unstaged.push(Change {
                            path: p.clone(),
                            change: ChangeKind::Modified,
                        });
                    }
                }
            }
        }
        let mut all = BTreeSet::new();
        self.walk_lenient("", &mut all)?;
        let untracked = all
            .into_iter()
            .filter(|p| !stage.entries.contains_key(p))
            .collect();
        Ok(Status {
            head,
            staged,
            unstaged,
            untracked,
        })
    }

    /// Like `walk`, but listing symlinks as files instead of failing (status only reports).
    fn walk_lenient(&self, tp: &str, out: &mut BTreeSet<String>) -> Result<()> {
        let dir = self.abs(tp);
        for e in std::fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let n = e.file_name().to_string_lossy().into_owned();
            let child = if tp.is_empty() {
                n
            } else {
                format!("{tp}/{n}")
            };
            if self.ignored(&child) {
                continue;
            }
            let ft = e.file_type().at(e.path())?;
            if ft.is_dir() {
                self.walk_lenient(&child, out)?;
            } else {
                out.insert(child);
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- commits

    /// Record the staging area as a commit on HEAD's branch (or detached HEAD).
    pub fn commit(&mut self, opts: &CommitOptions) -> Result<CommitId> {
        let head = self.head()?;
        let tree = self.staged()?;
        let tree_id = TreeId(self.put_object(&tree.encode())?);
        let parents: Vec<CommitId> = head.commit().into_iter().collect();
        if !opts.allow_empty {
            let same = match parents.first() {
                Some(p) => self.read_commit(p)?.tree == tree_id,
                None => tree.entries.is_empty(),
            };
            if same {
                return Err(StoreError::NothingToCommit);
            }
        }
        if let Some(run) = &opts.run {
            self.get_run(run)?; // must exist: never commit a dangling run id
        }
        let author = opts
            .author
            .clone()
            .or_else(|| std::env::var("SRLM_AUTHOR").ok())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
        let commit = Commit {
            tree: tree_id,
            parents: parents.clone(),
            author,
            time: now_rfc3339(),
            message: opts.message.clone(),
            run: opts.run,
        };
        let id = CommitId(self.put_object(&commit.encode())?);
        let refname = match &head {
            Head::Branch { name, .. } => format!("refs/heads/{name}"),
            Head::Detached { .. } => "HEAD".into(),
        };
        self.index.set_ref(&refname, &id.to_hex())?;
        self.index.flush()?;
        self.log_op(
            "commit",
            serde_json::json!({"ref": refname, "old": parents.first(), "new": id, "message": opts.message}),
        )?;
        Ok(id)
    }

    /// History from `from`, newest first (all parents, by commit time).
    pub fn log(&self, from: &CommitId) -> Result<Vec<(CommitId, Commit)>> {
        let mut heap = BinaryHeap::new();
        let mut commits = std::collections::HashMap::new();
        let c = self.read_commit(from)?;
        heap.push((c.time.clone(), *from));
        commits.insert(*from, c);
        let mut out = Vec::new();
        while let Some((_, id)) = heap.pop() {
            let c = commits
                .get(&id)
                .cloned()
                .expect("queued commits are loaded");
            for p in &c.parents {
                if !commits.contains_key(p) {
                    let pc = self.read_commit(p)?;
                    heap.push((pc.time.clone(), *p));
                    commits.insert(*p, pc);
                }
            }
            out.push((id, c));
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- refs and revisions

    pub fn head(&self) -> Result<Head> {
        let v = self
            .index
            .get_ref("HEAD")?
            .unwrap_or_else(|| "ref: refs/heads/main".into());
        if let Some(r) = v.strip_prefix("ref: refs/heads/") {
            let commit = self.branch_commit(r)?;
            Ok(Head::Branch {
                name: r.to_string(),
                commit,
            })
        } else {
            Ok(Head::Detached { commit: v.parse()? })
        }
    }

    fn branch_commit(&self, name: &str) -> Result<Option<CommitId>> {
        self.index
            .get_ref(&format!("refs/heads/{name}"))?
            .map(|v| v.parse())
            .transpose()
    }

    fn tag_commit(&self, name: &str) -> Result<Option<CommitId>> {
        self.index
            .get_ref(&format!("refs/tags/{name}"))?
            .map(|v| v.parse())
            .transpose()
    }

    /// Resolve a revision: `HEAD`, a branch, a tag (`M1`, `AIFT(M1)`), a unique hex prefix of a
    /// commit id (4+ characters), each optionally followed by `~N` (N first parents back) or
    /// `^` / `^N` (the Nth parent).
    pub fn resolve(&self, rev: &str) -> Result<CommitId> {
        let cut = rev.find(['~', '^']).unwrap_or(rev.len());
        let (base, mut rest) = rev.split_at(cut);
        let mut id = self.resolve_base(rev, base)?;
        while !rest.is_empty() {
            let op = rest.as_bytes()[0];
            let digits_end = rest[1..]
                .find(['~', '^'])
                .map(|i| i + 1)
                .unwrap_or(rest.len());
            let num = &rest[1..digits_end];
            let n: usize = if num.is_empty() {
                1
            } else {
                num.parse().map_err(|_| StoreError::BadRevision {
                    rev: rev.into(),
                    detail: format!("'{num}' is not a number"),
                })?
            };
            if op == b'~' {
                for _ in 0..n {
                    id = *self.read_commit(&id)?.parents.first().ok_or_else(|| {
                        StoreError::BadRevision {
                            rev: rev.into(),
                            detail: "goes back past the first commit".into(),
                        }
                    })?;
                }
            } else if n > 0 {
                id = *self.read_commit(&id)?.parents.get(n - 1).ok_or_else(|| {
                    StoreError::BadRevision {
                        rev: rev.into(),
                        detail: format!("the commit has no parent number {n}"),
                    }
                })?;
            }
            rest = &rest[digits_end..];
        }
        Ok(id)
    }

    fn resolve_base(&self, rev: &str, base: &str) -> Result<CommitId> {
        if base == "HEAD" || base == "@" {
            return self
                .head()?
                .commit()
                .ok_or_else(|| StoreError::BadRevision {
                    rev: rev.into(),
                    detail: "HEAD has no commits yet".into(),
                });
        }
        if let Some(c) = self.branch_commit(base)? {
            return Ok(c);
        }
        if let Some(c) = self.tag_commit(base)? {
            return Ok(c);
        }
        if base.len() >= 4 && base.len() <= 64 && base.bytes().all(|b| b.is_ascii_hexdigit()) {
            let lower = base.to_ascii_lowercase();
            let mut hits = Vec::new();
            for id in crate::loose::with_prefix(&self.objects_dir(), &lower)? {
                if let Ok(raw) = self.get_object(&id) {
                    if tag_of(&raw) == Some("commit") {
                        hits.push(CommitId(id));
                    }
                }
            }
            match hits.len() {
                1 => return Ok(hits[0]),
                0 => {}
                n => {
                    return Err(StoreError::BadRevision {
                        rev: rev.into(),
                        detail: format!("prefix '{base}' is ambiguous ({n} commits)"),
                    })
                }
            }
        }
        Err(StoreError::UnknownRevision(rev.to_string()))
    }

    /// Resolve `REV:path` to its commit, normalised path and entry.
    pub fn resolve_path(&self, spec: &str) -> Result<(CommitId, String, TreeEntry)> {
        let (rev, path) = spec
            .split_once(':')
            .ok_or_else(|| StoreError::BadRevision {
                rev: spec.into(),
                detail: "expected REV:PATH".into(),
            })?;
        let commit = self.resolve(rev)?;
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let tree = self.commit_tree(&commit)?;
        let entry =
            tree.entries
                .get(&path)
                .cloned()
                .ok_or_else(|| StoreError::PathNotInRevision {
                    rev: rev.to_string(),
                    path: path.clone(),
                })?;
        Ok((commit, path, entry))
    }

    /// Create or move (with `force`) a tag.
    pub fn set_tag(&mut self, name: &str, target: &CommitId, force: bool) -> Result<()> {
        self.set_named_ref("tag", "refs/tags/", name, target, force)
    }

    /// Create or move (with `force`) a branch.
    pub fn set_branch(&mut self, name: &str, target: &CommitId, force: bool) -> Result<()> {
        self.set_named_ref("branch", "refs/heads/", name, target, force)
    }

    fn set_named_ref(
        &mut self,
        kind: &'static str,
        prefix: &str,
        name: &str,
        target: &CommitId,
        force: bool,
    ) -> Result<()> {
        validate_ref_name(kind, name)?;
        self.read_commit(target)?;
        let key = format!("{prefix}{name}");
        let old = self.index.get_ref(&key)?;
        if old.is_some() && !force {
            return Err(StoreError::RefExists {
                kind,
                name: name.into(),
            });
        }
        self.index.set_ref(&key, &target.to_hex())?;
        self.index.flush()?;
        self.log_op(
            kind,
            serde_json::json!({"ref": key, "old": old, "new": target}),
        )
    }

    pub fn delete_tag(&mut self, name: &str) -> Result<()> {
        self.delete_named_ref("tag", "refs/tags/", name)
    }

    pub fn delete_branch(&mut self, name: &str) -> Result<()> {
        if let Head::Branch { name: h, .. } = self.head()? {
            if h == name {
                return Err(StoreError::BranchCheckedOut(name.into()));
            }
        }
        self.delete_named_ref("branch", "refs/heads/", name)
    }

    fn delete_named_ref(&mut self, kind: &'static str, prefix: &str, name: &str) -> Result<()> {
        let key = format!("{prefix}{name}");
        let old = self.index.get_ref(&key)?;
        if old.is_none() || !self.index.remove_ref(&key)? {
            return Err(StoreError::RefNotFound {
                kind,
                name: name.into(),
            });
        }
        self.index.flush()?;
        self.log_op(
            &format!("{kind}-delete"),
            serde_json::json!({"ref": key, "old": old}),
        )
    }

    /// Tags, sorted by name.
    pub fn tags(&self) -> Result<Vec<(String, CommitId)>> {
        self.named_refs("refs/tags/")
    }

    /// Branches, sorted by name.
    pub fn branches(&self) -> Result<Vec<(String, CommitId)>> {
        self.named_refs("refs/heads/")
    }

    fn named_refs(&self, prefix: &str) -> Result<Vec<(String, CommitId)>> {
        self.index
            .refs_with_prefix(prefix)?
            .into_iter()
            .map(|(n, v)| Ok((n, v.parse()?)))
            .collect()
    }

    // ---------------------------------------------------------------- checkout

    /// Restore the working tree to `rev`. Without `paths`: every tracked file (files tracked now
    /// but absent from `rev` are removed), the staging area becomes `rev`'s tree and HEAD moves
    /// (onto the branch if `rev` names one). With `paths` (relative to `cwd`): only those files
    /// (or directories) are restored and staged. Refuses to overwrite uncommitted changes unless
    /// `force`. Data is verified while written: a corrupt object aborts before the file is
    /// replaced.
    pub fn checkout(
        &mut self,
        cwd: &Path,
        rev: &str,
        paths: &[PathBuf],
        force: bool,
    ) -> Result<CheckoutReport> {
        let commit = self.resolve(rev)?;
        let target = self.commit_tree(&commit)?;
        let mut report = CheckoutReport {
            commit: Some(commit),
            ..Default::default()
        };
        let stage = self.staged()?;
        let selected: Vec<(String, TreeEntry)> = if paths.is_empty() {
            target.entries.clone().into_iter().collect()
        } else {
            let mut sel = Vec::new();
            for p in paths {
                let tp = self.tree_path(cwd, p)?;
                let hits: Vec<_> = target
                    .entries
                    .iter()
                    .filter(|(k, _)| tp.is_empty() || **k == tp || k.starts_with(&format!("{tp}/")))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if hits.is_empty() {
                    return Err(StoreError::PathNotInRevision {
                        rev: rev.into(),
                        path: tp,
                    });
                }
                sel.extend(hits);
            }
            sel
        };
        let to_remove: Vec<String> = if paths.is_empty() {
            stage
                .entries
                .keys()
                .filter(|k| !target.entries.contains_key(*k))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        if !force {
            let mut dirty = BTreeSet::new();
            if paths.is_empty() {
                let st = self.status()?;
                dirty.extend(st.staged.into_iter().map(|c| c.path));
                dirty.extend(
                    st.unstaged
                        .into_iter()
                        .filter(|c| {
                            c.change != ChangeKind::Deleted || target.entries.contains_key(&c.path)
                        })
                        .map(|c| c.path),
                );
            }
            for (p, e) in &selected {
                let abs = self.abs(p);
                if !abs.exists() {
                    continue;
                }
                let cur = self.hash_file(p)?;
                let tracked_same = stage
                    .entries
                    .get(p)
                    .map(|s| s.id == cur.id)
                    .unwrap_or(false);
                if cur.id != e.id && !tracked_same {
                    dirty.insert(p.clone()); // modified, or untracked and would be overwritten
                }
            }
            if !dirty.is_empty() {
                return Err(StoreError::Dirty(dirty.into_iter().collect()));
            }
        }
        for (p, e) in &selected {
            let abs = self.abs(p);
            if abs.is_file() && self.hash_file(p).map(|c| c.id == e.id).unwrap_or(false) {
                report.unchanged.push(p.clone());
                continue;
            }
            self.write_entry(p, e)?;
            report.written.push(p.clone());
        }
        for p in &to_remove {
            let abs = self.abs(p);
            if abs.exists() {
                std::fs::remove_file(&abs).at(&abs)?;
                report.removed.push(p.clone());
            }
        }
        if paths.is_empty() {
            self.index.stage_clear()?;
        }
        for (p, e) in &selected {
            self.index.stage_put(p, e)?;
        }
        if paths.is_empty() {
            let head = if self.branch_commit(rev)?.is_some() {
                format!("ref: refs/heads/{rev}")
            } else {
                commit.to_hex()
            };
            self.index.set_ref("HEAD", &head)?;
        }
        self.index.flush()?;
        self.log_op(
            "checkout",
            serde_json::json!({"rev": rev, "commit": commit, "written": report.written, "removed": report.removed}),
        )?;
        Ok(report)
    }

    /// Write one entry to the working tree: streamed into a temp file beside the target,
    /// verified piece by piece, then renamed over it.
    fn write_entry(&self, tp: &str, e: &TreeEntry) -> Result<()> {
        let abs = self.abs(tp);
        let parent = abs.parent().expect("a tree path has a parent");
        std::fs::create_dir_all(parent).at(parent)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".srlm-tmp-")
            .tempfile_in(parent)
            .at(parent)?;
        let mut r = self.open_entry(e)?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
            std::io::copy(&mut r, &mut w).map_err(|err| {
                // a piece that failed verification comes back as the StoreError it was
                if err.get_ref().map(|i| i.is::<StoreError>()).unwrap_or(false) {
                    *err.into_inner().unwrap().downcast::<StoreError>().unwrap()
                } else {
                    StoreError::Io {
                        path: abs.clone(),
                        err,
                    }
                }
            })?;
            w.flush().at(&abs)?;
        }
        tmp.persist(&abs).map_err(|err| err.error).at(&abs)?;
        let (md, now) = stat_now(&abs)?;
        let racy = is_racy(&md, now);
        self.index.stat_put(
            tp,
            &StatEntry {
                stat: StatKey::of(&md),
                racy,
                entry: e.clone(),
            },
        )?;
        Ok(())
    }

    // ---------------------------------------------------------------- op log, sizes

    pub(crate) fn log_op(&self, op: &str, detail: serde_json::Value) -> Result<()> {
        let p = self.dir.join("oplog");
        let line = serde_json::json!({"time": now_rfc3339(), "op": op, "pid": std::process::id(), "detail": detail});
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .at(&p)?;
        f.write_all(format!("{line}\n").as_bytes()).at(&p)?;
        f.sync_data().at(&p)
    }

    /// The op log (every init, add, commit, ref change, checkout and gc), oldest first.
    pub fn oplog(&self) -> Result<Vec<serde_json::Value>> {
        let p = self.dir.join("oplog");
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(StoreError::Io { path: p, err: e }),
        };
        // A line cut short by a crash is skipped, not fatal.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Bytes used by the store directory (objects, packs, index, everything).
    pub fn disk_usage(&self) -> Result<u64> {
        fn du(p: &Path) -> Result<u64> {
            let md = std::fs::symlink_metadata(p).at(p)?;
            if md.is_dir() {
                let mut s = 0;
                for e in std::fs::read_dir(p).at(p)? {
                    s += du(&e.at(p)?.path())?;
                }
                Ok(s)
            } else {
                Ok(md.len())
            }
        }
        du(&self.dir)
    }
}

fn stat_now(abs: &Path) -> Result<(std::fs::Metadata, SystemTime)> {
    let now = SystemTime::now();
    let md = std::fs::symlink_metadata(abs).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::Missing(abs.to_path_buf())
        } else {
            StoreError::Io {
                path: abs.into(),
                err: e,
            }
        }
    })?;
    Ok((md, now))
}

/// A file whose mtime is within [`RACY_MARGIN`] of when we looked at it could be rewritten in
/// the same timestamp tick without its stat changing.
fn is_racy(md: &std::fs::Metadata, looked_at: SystemTime) -> bool {
    match md.modified() {
        Ok(m) => m + RACY_MARGIN >= looked_at,
        Err(_) => true,
    }
}

fn ingest(abs: &Path, kind: EntryKind, sink: &mut dyn Sink) -> Result<Manifest> {
    let f = File::open(abs).at(abs)?;
    Ok(match kind {
        EntryKind::Dataset => Manifest::Rows(split_rows(abs, f, sink)?),
        _ => Manifest::Chunks(chunk_file(abs, f, sink)?),
    })
}

fn diff_trees(a: &Tree, b: &Tree) -> Vec<Change> {
    let mut out = Vec::new();
    for (p, e) in &b.entries {
        match a.entries.get(p) {
            None => out.push(Change {
                path: p.clone(),
                change: ChangeKind::Added,
            }),
            Some(old) if old.id != e.id || old.kind != e.kind => out.push(Change {
                path: p.clone(),
                change: ChangeKind::Modified,
            }),
            _ => {}
        }
    }
    for p in a.entries.keys() {
        if !b.entries.contains_key(p) {
            out.push(Change {
                path: p.clone(),
                change: ChangeKind::Deleted,
            });
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

/// Streams a tracked file's bytes (see [`Store::open_entry`]).
pub struct EntryReader<'a> {
    store: &'a Store,
    pieces: Vec<(BlobId, u32)>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    rows: bool,
    final_newline: bool,
}

impl Read for EntryReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.next >= self.pieces.len() {
                return Ok(0);
            }
            let (id, len) = self.pieces[self.next];
            self.next += 1;
            let mut data = self
                .store
                .read_blob(&id)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if data.len() != len as usize {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    StoreError::Corrupt {
                        id: id.0,
                        detail: "length differs from manifest".into(),
                    },
                ));
            }
            if self.rows && (self.next < self.pieces.len() || self.final_newline) {
                data.push(b'\n');
            }
            self.buf = data;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
