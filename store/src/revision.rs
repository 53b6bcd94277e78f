//! Refs and revisions on the [`Store`]: HEAD, branches and tags (through [`RefStore`]), and
//! revision syntax: `HEAD`, `@`, a branch, a tag (`M1`, `AIFT(M1)`), a unique hex prefix, each
//! optionally followed by `~N` / `^N`, and `REV:PATH`.
use crate::error::{Result, StoreError};
use crate::objects::tag_of;
use crate::refs::RefStore;
use crate::store::Head;
use crate::{CommitId, Store, TreeEntry};

pub(crate) fn validate_ref_name(kind: &'static str, name: &str) -> Result<()> {
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
    pub fn head(&self) -> Result<Head> {
        let v = self
            .refs
            .read("HEAD")?
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

    pub(crate) fn branch_commit(&self, name: &str) -> Result<Option<CommitId>> {
        self.refs
            .read(&format!("refs/heads/{name}"))?
            .map(|v| v.parse())
            .transpose()
    }

    fn tag_commit(&self, name: &str) -> Result<Option<CommitId>> {
        self.refs
            .read(&format!("refs/tags/{name}"))?
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
            for id in self.odb.with_prefix(&lower)? {
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
        // a file, or a folder committed as one unit
        let entry = tree
            .entries
            .get(&path)
            .or_else(|| tree.units.get(&path))
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
        self.writable("changing a ref")?;
        validate_ref_name(kind, name)?;
        self.read_commit(target)?;
        let key = format!("{prefix}{name}");
        let old = self.refs.read(&key)?;
        if old.is_some() && !force {
            return Err(StoreError::RefExists {
                kind,
                name: name.into(),
            });
        }
        self.refs
            .update(&key, old.as_deref(), Some(&target.to_hex()))?;
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
        self.writable("deleting a ref")?;
        let key = format!("{prefix}{name}");
        let Some(old) = self.refs.read(&key)? else {
            return Err(StoreError::RefNotFound {
                kind,
                name: name.into(),
            });
        };
        self.refs.update(&key, Some(&old), None)?;
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
        self.refs
            .list(prefix)?
            .into_iter()
            .map(|(n, v)| Ok((n, v.parse()?)))
            .collect()
    }
}
