//! `checkout`: restore the working tree (or some paths) to a revision, byte for byte.
//!
//! Every write and delete goes through [`crate::wtfs`] (folders opened by handle, never through
//! a symlink), every file is verified piece by piece while it is written to a temp file beside
//! its target and renamed over it only when complete. A checkout killed half-way leaves files
//! that hold either their old bytes or the target's: running it again treats the ones already
//! equal to the target as clean, and srlm's temp files (`.srlm-tmp-*`) are ignored at any depth
//! and removed from the folders it writes to.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Result, StoreError};
use crate::index::{StatEntry, StatKey};
use crate::refs::RefStore;
use crate::store::{ChangeKind, CheckoutReport};
use crate::worktree::{is_racy, under};
use crate::{Store, TreeEntry};

impl Store {
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
        self.writable("checkout")?;
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
                    .filter(|(k, _)| under(k, &tp))
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
        // What each selected path holds now: its entry, or why it cannot be read.
        let mut current: Vec<Option<Result<TreeEntry>>> = Vec::with_capacity(selected.len());
        for (p, _) in &selected {
            current.push(match std::fs::symlink_metadata(self.abs(p)) {
                Err(_) => None,
                Ok(_) => Some(self.hash_file(p)),
            });
        }
        let equal: std::collections::HashSet<&str> = selected
            .iter()
            .zip(&current)
            .filter(|((_, e), c)| matches!(c, Some(Ok(cur)) if cur.id == e.id))
            .map(|((p, _), _)| p.as_str())
            .collect();
        let already = |p: &str| equal.contains(p);
        if !force {
            let mut dirty = BTreeSet::new();
            if paths.is_empty() {
                let st = self.status()?;
                // A path that already holds the target's bytes (a checkout killed half-way)
                // loses nothing: it is not a change that would be overwritten.
                dirty.extend(
                    st.staged
                        .into_iter()
                        .map(|c| c.path)
                        .filter(|p| !already(p)),
                );
                dirty.extend(
                    st.unstaged
                        .into_iter()
                        .filter(|c| {
                            c.change != ChangeKind::Deleted || target.entries.contains_key(&c.path)
                        })
                        .map(|c| c.path)
                        .filter(|p| !already(p)),
                );
            }
            for ((p, e), cur) in selected.iter().zip(&current) {
                match cur {
                    None => {}
                    Some(Ok(cur)) => {
                        let tracked_same = stage
                            .entries
                            .get(p)
                            .map(|s| s.id == cur.id)
                            .unwrap_or(false);
                        if cur.id != e.id && !tracked_same {
                            dirty.insert(p.clone()); // modified, or untracked and in the way
                        }
                    }
                    // a folder holding only tracked files this checkout removes (a file that
                    // became a folder) is fine; anything else that is not a file where the
                    // file goes (FIFO, foreign folder) is never replaced silently
                    Some(Err(StoreError::NotRegular { .. })) => {
                        let mut inside = BTreeSet::new();
                        let is_dir = self.abs(p).is_dir();
                        if is_dir {
                            self.walk_lenient(p, &mut inside)?;
                        }
                        if !is_dir || !inside.iter().all(|f| to_remove.contains(f)) {
                            dirty.insert(p.clone());
                        }
                    }
                    Some(Err(StoreError::Missing(_))) => {}
                    Some(Err(_)) => {
                        self.hash_file(p)?; // the same error again, to return it
                    }
                }
            }
            if !dirty.is_empty() {
                return Err(StoreError::Dirty(dirty.into_iter().collect()));
            }
        }
        // Removals first: a tracked file may stand where a folder of the target goes (or the
        // reverse), and its folders go with it when they are left empty.
        for p in &to_remove {
            if crate::wtfs::remove_file(&self.workdir, p)? {
                report.removed.push(p.clone());
            }
            crate::wtfs::remove_empty_parents(&self.workdir, p);
        }
        let mut touched_dirs = BTreeSet::new();
        for ((p, e), cur) in selected.iter().zip(&current) {
            touched_dirs.insert(self.abs(p).parent().map(Path::to_path_buf));
            if matches!(cur, Some(Ok(c)) if c.id == e.id) {
                report.unchanged.push(p.clone());
                continue;
            }
            self.write_entry(p, e)?;
            report.written.push(p.clone());
        }
        for d in touched_dirs.into_iter().flatten() {
            crate::wtfs::remove_temp_leftovers(&d);
        }
        self.stage_mut(|t| {
            if paths.is_empty() {
                t.entries.clear();
            }
            for (p, e) in &selected {
                for k in crate::worktree::conflicts(&t.entries, p) {
                    t.entries.remove(&k);
                }
                t.entries.insert(p.clone(), e.clone());
            }
        })?;
        self.flush()?;
        let old_head = self.refs.read("HEAD")?;
        if paths.is_empty() {
            let head = if self.branch_commit(rev)?.is_some() {
                format!("ref: refs/heads/{rev}")
            } else {
                commit.to_hex()
            };
            self.refs.update("HEAD", old_head.as_deref(), Some(&head))?;
        }
        self.log_op(
            "checkout",
            serde_json::json!({"rev": rev, "commit": commit, "old_head": old_head,
                "old": self.head_commit_of(old_head.as_deref()),
                "written": report.written, "removed": report.removed}),
        )?;
        Ok(report)
    }

    /// The commit a HEAD value names (directly or through its branch).
    fn head_commit_of(&self, head: Option<&str>) -> Option<String> {
        let h = head?;
        match h.strip_prefix("ref: ") {
            Some(r) => self.refs.read(r).ok().flatten(),
            None => Some(h.to_string()),
        }
    }

    /// Write one entry to the working tree: streamed into a temp file beside the target,
    /// verified piece by piece, then renamed over it.
    fn write_entry(&self, tp: &str, e: &TreeEntry) -> Result<()> {
        let mut r = self.open_entry(e)?;
        let abs = self.abs(tp);
        let md = crate::wtfs::write_file(&self.workdir, tp, &mut |w| {
            std::io::copy(&mut r, w).map(|_| ()).map_err(|err| {
                // a piece that failed verification comes back as the StoreError it was
                if err.get_ref().map(|i| i.is::<StoreError>()).unwrap_or(false) {
                    *err.into_inner().unwrap().downcast::<StoreError>().unwrap()
                } else {
                    StoreError::Io {
                        path: abs.clone(),
                        err,
                    }
                }
            })
        })?;
        let racy = is_racy(&md, SystemTime::now());
        self.index()?.stat_put(
            tp,
            &StatEntry {
                stat: StatKey::of(&md),
                racy,
                entry: e.clone(),
            },
        )?;
        Ok(())
    }
}
