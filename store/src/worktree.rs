//! Staging from the working tree: `add` (files to pieces and manifests, the stat cache, the
//! staging area), `hash_file`, `status`, and commits (`commit` of the staging area,
//! `commit_entries` of exactly the entries one caller staged).
//!
//! Files are read only when regular (never through a symlink, never a FIFO or device); names
//! that cannot be tracked (`.srlm`, `.git`, srlm's `.srlm-tmp*` files, at any depth) are
//! skipped by walks; a name that is not UTF-8 is refused by name.
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{IoContext, Result, StoreError};
use crate::index::{StatEntry, StatKey};
use crate::ingest::{chunk_file, split_rows, NullSink, PackSink, Sink};
use crate::objects::Manifest;
use crate::pack::PackWriter;
use crate::refs::RefStore;
use crate::store::{
    AddProgress, AddReport, AddedFile, Change, ChangeKind, CommitOptions, Head, Status,
};
use crate::{Commit, CommitId, EntryKind, ManifestId, ObjectId, Store, Tree, TreeEntry, TreeId};

/// A file modified less than this before it was hashed is "racy": its stat is not trusted.
const RACY_MARGIN: Duration = Duration::from_millis(50);

/// Whether `p` is `prefix` or lies under it (`prefix` empty: everything).
pub(crate) fn under(p: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || p == prefix
        || (p.len() > prefix.len() && p.starts_with(prefix) && p.as_bytes()[prefix.len()] == b'/')
}

/// The entries of `entries` that conflict with a file at `p`: the folders above it held as
/// files, and anything under `p/` (O(depth) lookups and one range scan, not a pass over all).
pub(crate) fn conflicts<V>(entries: &BTreeMap<String, V>, p: &str) -> Vec<String> {
    let mut out: Vec<String> = p
        .match_indices('/')
        .map(|(i, _)| &p[..i])
        .filter(|a| entries.contains_key(*a))
        .map(str::to_string)
        .collect();
    let dir = format!("{p}/");
    out.extend(
        entries
            .range(dir.clone()..)
            .take_while(|(k, _)| k.starts_with(&dir))
            .map(|(k, _)| k.clone()),
    );
    out
}

impl Store {
    /// Tree path of a user path (relative to `cwd`).
    pub fn tree_path(&self, cwd: &Path, user: &Path) -> Result<String> {
        crate::paths::to_tree_path(&self.workdir, cwd, user)
    }

    /// Stage files (paths relative to `cwd`; directories recursively). A tracked path that no
    /// longer exists is unstaged; a tracked file that became a folder (or the reverse) is
    /// replaced by what is there now. Unchanged files cost a stat.
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
        self.writable("add")?;
        if let Some(report) = self.add_unchanged(cwd, paths)? {
            return Ok(report);
        }
        let staged = self.staged()?.entries;
        let mut files = BTreeSet::new();
        let mut removed = BTreeSet::new();
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
                    let gone: Vec<&String> = staged.keys().filter(|k| under(k, &tp)).collect();
                    if gone.is_empty() {
                        return Err(StoreError::Missing(p.clone()));
                    }
                    removed.extend(gone.into_iter().cloned());
                }
            }
        }
        // A staged path that is now a folder holding added files, or that lies under an added
        // file (its folder became a file), is no longer there.
        for f in &files {
            removed.extend(conflicts(&staged, f));
        }
        let mut report = AddReport {
            removed: removed.into_iter().collect(),
            ..Default::default()
        };
        let mut writer = PackWriter::new(&self.tmp_dir())?;
        let mut pending: Vec<(String, Manifest, EntryKind, StatKey, bool)> = Vec::new();
        {
            let mut packs = self.odb.packs();
            let mut sink = PackSink::new(&mut writer, &mut packs);
            for tp in &files {
                let abs = self.workdir.join(tp);
                let before = SystemTime::now();
                let (file, md) = crate::wtfs::open_regular(&abs)?;
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
                let m = ingest(&abs, file, kind, &mut sink)?;
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
            self.odb.packs().reload();
        }
        for (tp, m, kind, key, racy) in pending {
            let entry = self.put_manifest(&m, kind)?;
            self.index()?.stat_put(
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
        let changed = !report.removed.is_empty()
            || report
                .added
                .iter()
                .any(|f| staged.get(&f.path) != Some(&f.entry));
        if changed {
            self.stage_mut(|t| {
                for r in &report.removed {
                    t.entries.remove(r);
                }
                for f in &report.added {
                    t.entries.insert(f.path.clone(), f.entry.clone());
                }
            })?;
        }
        report.added.sort_by(|a, b| a.path.cmp(&b.path));
        // Re-adding unchanged files writes nothing: no flush, no op-log line; only the
        // fast-add snapshot if it is missing, so the next re-add need not open the index.
        let unchanged = !changed && report.added.iter().all(|f| f.cached);
        if unchanged && !self.dir.join("fastadd").exists() {
            self.index()?.write_fast_add(&self.staged()?)?;
        }
        if !unchanged {
            self.flush()?;
            self.log_op(
                "add",
                serde_json::json!({
                    "paths": report.added.iter().map(|f| &f.path).collect::<Vec<_>>(),
                    "removed": report.removed,
                }),
            )?;
        }
        Ok(report)
    }

    /// The fast path of `add`: when every path is a file whose stat matches the fast-add
    /// snapshot (so it is staged as it is), report it unchanged without opening the index.
    fn add_unchanged(&self, cwd: &Path, paths: &[PathBuf]) -> Result<Option<AddReport>> {
        let Some(fa) = crate::index::FastAdd::read(&self.dir.join("fastadd")) else {
            return Ok(None);
        };
        let mut report = AddReport::default();
        for p in paths {
            let tp = self.tree_path(cwd, p)?;
            let Some((stat, entry)) = fa.files.get(&tp) else {
                return Ok(None);
            };
            let md = match std::fs::symlink_metadata(self.abs(&tp)) {
                Ok(md) if md.is_file() => md,
                _ => return Ok(None),
            };
            if StatKey::of(&md) != *stat || !self.odb_has_manifest(&entry.id)? {
                return Ok(None);
            }
            report.added.push(AddedFile {
                path: tp,
                entry: entry.clone(),
                cached: true,
            });
        }
        report.added.sort_by(|a, b| a.path.cmp(&b.path));
        report.added.dedup_by(|a, b| a.path == b.path);
        Ok(Some(report))
    }

    fn odb_has_manifest(&self, id: &ManifestId) -> Result<bool> {
        crate::odb::ObjectDb::has_object(&self.odb, &id.0)
    }

    fn put_manifest(&self, m: &Manifest, kind: EntryKind) -> Result<TreeEntry> {
        let id = ManifestId(self.put_object(&m.encode())?);
        Ok(entry_of(m, kind, id))
    }

    /// The entry the stat cache holds for a path, if the file's stat still matches and the
    /// content is really in the store.
    fn cached_entry(&self, tp: &str, key: &StatKey) -> Result<Option<TreeEntry>> {
        let Some(ix) = self.index_if_available() else {
            return Ok(None);
        };
        match ix.stat_get(tp)? {
            Some(se) if !se.racy && se.stat == *key && self.odb_has_manifest(&se.entry.id)? => {
                Ok(Some(se.entry))
            }
            _ => Ok(None),
        }
    }

    /// Hash a working-tree file without storing it (the entry it would get). A path that is
    /// not a regular file is [`StoreError::NotRegular`].
    pub fn hash_file(&self, tp: &str) -> Result<TreeEntry> {
        let abs = self.abs(tp);
        let (file, md) = crate::wtfs::open_regular(&abs)?;
        if let Some(e) = self.cached_entry(tp, &StatKey::of(&md))? {
            return Ok(e);
        }
        let kind = EntryKind::for_path(tp);
        let m = ingest(&abs, file, kind, &mut NullSink)?;
        Ok(entry_of(&m, kind, ManifestId(ObjectId::of(&m.encode()))))
    }

    pub(crate) fn abs(&self, tp: &str) -> PathBuf {
        if tp.is_empty() {
            self.workdir.clone()
        } else {
            self.workdir.join(tp)
        }
    }

    /// The names of a working-tree folder's entries that may be tracked, sorted; a name that
    /// is not UTF-8 is an error (`strict`) or skipped.
    fn list_dir(&self, tp: &str, strict: bool) -> Result<Vec<(String, std::fs::FileType)>> {
        let dir = self.abs(tp);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let name = match e.file_name().into_string() {
                Ok(n) => n,
                Err(raw) if strict => {
                    return Err(StoreError::BadPath {
                        path: dir.join(&raw).display().to_string(),
                        reason: "the file name is not valid UTF-8; rename it to track it".into(),
                    })
                }
                Err(_) => continue,
            };
            if name.eq_ignore_ascii_case(".srlm")
                || name.eq_ignore_ascii_case(".git")
                || crate::paths::is_temp_name(&name)
            {
                continue; // a store, a git repository, srlm's temp files: never tracked
            }
            let child = if tp.is_empty() {
                name.clone()
            } else {
                format!("{tp}/{name}")
            };
            match crate::paths::check_tree_path(&child) {
                Ok(()) => {}
                Err(e) if strict => return Err(e),
                Err(_) => continue,
            }
            out.push((child, e.file_type().at(e.path())?));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// All regular files under a tree path (symlinks are an error; FIFOs, sockets and devices
    /// are skipped).
    fn walk(&self, tp: &str, out: &mut BTreeSet<String>) -> Result<()> {
        for (child, ft) in self.list_dir(tp, true)? {
            if ft.is_symlink() {
                return Err(StoreError::BadPath {
                    path: child,
                    reason: "symlinks are not supported (track the file itself)".into(),
                });
            } else if ft.is_dir() {
                self.walk(&child, out)?;
            } else if ft.is_file() {
                out.insert(child);
            }
        }
        Ok(())
    }

    /// Like `walk`, but listing symlinks and special files instead of failing (status only
    /// reports).
    pub(crate) fn walk_lenient(&self, tp: &str, out: &mut BTreeSet<String>) -> Result<()> {
        for (child, ft) in self.list_dir(tp, false)? {
            if ft.is_dir() {
                self.walk_lenient(&child, out)?;
            } else {
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
            let change = match self.hash_file(p) {
                Err(StoreError::Missing(_)) => Some(ChangeKind::Deleted),
                Err(StoreError::NotRegular { .. }) => Some(ChangeKind::Modified),
                Err(e) => return Err(e),
                Ok(cur) if cur.id != e.id => Some(ChangeKind::Modified),
                Ok(_) => None,
            };
            if let Some(change) = change {
                unstaged.push(Change {
                    path: p.clone(),
                    change,
                });
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

    // ---------------------------------------------------------------- commits

    /// Record the staging area as a commit on HEAD's branch (or detached HEAD).
    pub fn commit(&mut self, opts: &CommitOptions) -> Result<CommitId> {
        let tree = self.staged()?;
        self.commit_tree_of(tree, opts)
    }

    /// Commit HEAD's tree with exactly `changes` applied (a path to its new entry, or `None`
    /// to remove it and everything under it): what one caller staged, whatever else the
    /// shared staging area holds by now. The staging area takes the same changes.
    pub fn commit_entries(
        &mut self,
        changes: &BTreeMap<String, Option<TreeEntry>>,
        opts: &CommitOptions,
    ) -> Result<CommitId> {
        let mut tree = match self.head()?.commit() {
            Some(c) => self.commit_tree(&c)?,
            None => Tree::default(),
        };
        let apply = |t: &mut Tree| {
            for (p, e) in changes {
                t.entries.remove(p);
                for k in conflicts(&t.entries, p) {
                    t.entries.remove(&k);
                }
                if let Some(e) = e {
                    t.entries.insert(p.clone(), e.clone());
                }
            }
        };
        apply(&mut tree);
        let id = self.commit_tree_of(tree, opts)?;
        self.stage_mut(apply)?;
        self.flush()?;
        Ok(id)
    }

    fn commit_tree_of(&mut self, mut tree: Tree, opts: &CommitOptions) -> Result<CommitId> {
        self.writable("commit")?;
        tree.units = self.units_of(&tree.entries, &opts.units)?;
        let head = self.head()?;
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
            time: crate::store::now_rfc3339(),
            message: opts.message.clone(),
            run: opts.run,
        };
        let id = CommitId(self.put_object(&commit.encode())?);
        let refname = match &head {
            Head::Branch { name, .. } => format!("refs/heads/{name}"),
            Head::Detached { .. } => "HEAD".into(),
        };
        let old = parents.first().map(|p| p.to_hex());
        self.refs
            .update(&refname, old.as_deref(), Some(&id.to_hex()))?;
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
}

pub(crate) fn entry_of(m: &Manifest, kind: EntryKind, id: ManifestId) -> TreeEntry {
    let rows = match m {
        Manifest::Rows(r) => Some(r.rows.len() as u64),
        Manifest::Chunks(_) => None,
    };
    TreeEntry {
        kind,
        id,
        size: m.size(),
        rows,
    }
}

/// A file whose mtime is within [`RACY_MARGIN`] of when we looked at it could be rewritten in
/// the same timestamp tick without its stat changing.
pub(crate) fn is_racy(md: &std::fs::Metadata, looked_at: SystemTime) -> bool {
    match md.modified() {
        Ok(m) => m + RACY_MARGIN >= looked_at,
        Err(_) => true,
    }
}

pub(crate) fn ingest(
    abs: &Path,
    f: std::fs::File,
    kind: EntryKind,
    sink: &mut (dyn Sink + Send),
) -> Result<Manifest> {
    Ok(match kind {
        EntryKind::Dataset => Manifest::Rows(split_rows(abs, f, sink)?),
        _ => Manifest::Chunks(chunk_file(abs, f, sink)?),
    })
}

pub(crate) fn diff_trees(a: &Tree, b: &Tree) -> Vec<Change> {
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
