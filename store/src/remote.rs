//! What a transfer to or from a remote needs of a store, without knowing any remote: the objects
//! and pieces a set of commits reaches (dependencies first, so a receiver can write them in that
//! order and never hold an object whose references are absent), packs as files (the transfer
//! unit: immutable, named by the digest of their index), importing a received pack after
//! verifying every piece, remote-tracking refs (`refs/remotes/NAME/BRANCH`) and the remotes'
//! configuration file (`.srlm/remotes`, opaque bytes the application parses).
use std::collections::HashSet;
use std::path::PathBuf;

use crate::error::{IoContext, Result, StoreError};
use crate::objects::{tag_of, Manifest, RunObject};
use crate::pack::{PackIndex, Packs};
use crate::refs::RefStore;
use crate::{Commit, CommitId, ObjectId, Store, Tree};

/// The remotes' configuration file inside `.srlm/`.
pub(crate) const REMOTES_FILE: &str = "remotes";

/// What a set of tips reaches.
#[derive(Debug, Default)]
pub struct Closure {
    /// Small objects, each after every object it names (dependencies first).
    pub objects: Vec<ObjectId>,
    /// Pieces (rows, chunks) the manifests among `objects` name.
    pub pieces: HashSet<ObjectId>,
}

/// The objects and pieces one small object names: `(objects, pieces)`. Commits name their tree,
/// parents and run; trees their manifests; manifests their pieces; run records their inputs,
/// outputs and any id in their JSON (e.g. a stored patch). Other objects name nothing.
pub fn object_links(id: &ObjectId, raw: &[u8]) -> Result<(Vec<ObjectId>, Vec<ObjectId>)> {
    let mut objs = Vec::new();
    let mut pieces = Vec::new();
    match tag_of(raw) {
        Some("commit") => {
            let c = Commit::decode(id, raw)?;
            objs.push(c.tree.0);
            objs.extend(c.parents.iter().map(|p| p.0));
            objs.extend(c.run.iter().map(|r| r.0));
        }
        Some("tree") => {
            let t = Tree::decode(id, raw)?;
            objs.extend(t.entries.values().chain(t.units.values()).map(|e| e.id.0))
        }
        Some("folder") => objs.extend(
            crate::FolderManifest::decode(id, raw)?
                .files
                .values()
                .map(|e| e.id.0),
        ),
        Some("manifest") => {
            pieces.extend(Manifest::decode(id, raw)?.pieces().iter().map(|(b, _)| b.0))
        }
        Some("run") => {
            let r = RunObject::decode(id, raw)?;
            objs.extend(r.inputs.iter().chain(r.outputs.iter()).copied());
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.record) {
                crate::gc::hex_ids(&v, &mut objs);
            }
        }
        _ => {}
    }
    objs.retain(|o| o != id);
    Ok((objs, pieces))
}

/// Order `tips` and what they reach through `links` dependencies first (iterative post-order),
/// skipping what `stop` holds. `links` answers `None` for an object that is not available (it is
/// left out; a run record may mention ids that are not objects).
pub fn dependency_order(
    tips: &[ObjectId],
    stop: &HashSet<ObjectId>,
    mut links: impl FnMut(&ObjectId) -> Result<Option<(Vec<ObjectId>, Vec<ObjectId>)>>,
) -> Result<Closure> {
    let mut out = Closure::default();
    let mut seen: HashSet<ObjectId> = HashSet::new();
    // (id, children expanded?)
    let mut stack: Vec<(ObjectId, Option<Vec<ObjectId>>)> =
        tips.iter().rev().map(|t| (*t, None)).collect();
    while let Some((id, kids)) = stack.pop() {
        match kids {
            None => {
                if stop.contains(&id) || !seen.insert(id) {
                    continue;
                }
                let Some((objs, pieces)) = links(&id)? else {
                    continue;
                };
                out.pieces.extend(pieces);
                stack.push((id, Some(Vec::new())));
                for o in objs.into_iter().rev() {
                    if !seen.contains(&o) && !stop.contains(&o) {
                        stack.push((o, None));
                    }
                }
            }
            Some(_) => out.objects.push(id),
        }
    }
    Ok(out)
}

impl Store {
    /// What `tips` reach in this store, dependencies first, leaving out what `stop` holds (and
    /// what `stop` reaches is not walked). Ids that are not objects here are skipped.
    pub fn closure(&self, tips: &[ObjectId], stop: &HashSet<ObjectId>) -> Result<Closure> {
        dependency_order(tips, stop, |id| match self.odb_get(id)? {
            Some(raw) => Ok(Some(object_links(id, &raw)?)),
            None => Ok(None),
        })
    }

    fn odb_get(&self, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        crate::odb::ObjectDb::get_object(&self.odb, id)
    }

    /// Whether a small object is present (packed pieces are not small objects).
    pub fn has_small_object(&self, id: &ObjectId) -> Result<bool> {
        crate::odb::ObjectDb::has_object(&self.odb, id)
    }

    /// Whether a piece (row or chunk) is present.
    pub fn has_piece(&self, id: &ObjectId) -> Result<bool> {
        crate::odb::ObjectDb::has_piece(&self.odb, id)
    }

    /// Store a received small object whose id must be `expected`; nothing is written when its
    /// bytes hash to another id.
    pub fn put_object_expecting(&self, expected: &ObjectId, bytes: &[u8]) -> Result<()> {
        let got = ObjectId::of(bytes);
        if got != *expected {
            return Err(StoreError::Corrupt {
                id: *expected,
                detail: format!("received bytes hash to {got}"),
            });
        }
        self.put_object(bytes).map(|_| ())
    }

    /// Whether commit `a` is `b` or one of its ancestors.
    pub fn is_ancestor(&self, a: &CommitId, b: &CommitId) -> Result<bool> {
        let mut queue = vec![*b];
        let mut seen = HashSet::new();
        while let Some(c) = queue.pop() {
            if c == *a {
                return Ok(true);
            }
            if !seen.insert(c) {
                continue;
            }
            queue.extend(self.read_commit(&c)?.parents);
        }
        Ok(false)
    }

    /// The names of this store's complete packs.
    pub fn pack_names(&self) -> Result<Vec<String>> {
        Packs::names(&self.dir.join("packs"))
    }

    /// The `.pack` and `.idx` files of pack `name`.
    pub fn pack_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join("packs");
        (
            d.join(format!("{name}.pack")),
            d.join(format!("{name}.idx")),
        )
    }

    /// The pieces of a local pack.
    pub fn pack_pieces(&self, name: &str) -> Result<Vec<ObjectId>> {
        let ix = PackIndex::load(&self.pack_files(name).1)?;
        Ok(ix.entries().map(|e| e.id).collect())
    }

    /// A temp file in `.srlm/tmp` (same file system as the store, removed when dropped or by
    /// the next writer after a kill), e.g. for a pack being received.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        self.writable("receiving data")?;
        tempfile::NamedTempFile::new_in(self.tmp_dir()).at(self.tmp_dir())
    }

    /// Add a received pack: `idx` must hash to `name` and `pack` must hold every piece it lists,
    /// intact (each is re-hashed); otherwise nothing is added. The pack is renamed into place
    /// before its index, as `add` does.
    pub fn import_pack(&self, name: &str, pack: tempfile::NamedTempFile, idx: &[u8]) -> Result<()> {
        self.writable("receiving a pack")?;
        let ids = parse_pack_index(name, idx)?;
        let (dest_pack, dest_idx) = self.pack_files(name);
        if dest_idx.exists() {
            return Ok(());
        }
        // verify in a scratch folder laid out as a packs directory
        let scratch = tempfile::tempdir_in(self.tmp_dir()).at(self.tmp_dir())?;
        let sp = scratch.path().join(format!("{name}.pack"));
        std::fs::hard_link(pack.path(), &sp)
            .or_else(|_| std::fs::copy(pack.path(), &sp).map(|_| ()))
            .at(&sp)?;
        std::fs::write(scratch.path().join(format!("{name}.idx")), idx)
            .at(scratch.path().to_path_buf())?;
        let mut reader = Packs::new(scratch.path().to_path_buf());
        let ix = PackIndex::load(&scratch.path().join(format!("{name}.idx")))?;
        let mut entries: Vec<_> = ix.entries().collect();
        entries.sort_by_key(|e| (e.frame_off, e.off));
        for e in &entries {
            reader.read_entry(name, e)?;
        }
        debug_assert_eq!(ids.len(), entries.len());
        pack.as_file().sync_all().at(pack.path().to_path_buf())?;
        crate::fsutil::persist(pack, &dest_pack)?;
        crate::fsutil::write_atomic(&self.tmp_dir(), &dest_idx, idx)?;
        self.odb.packs().reload();
        Ok(())
    }

    /// Remote-tracking branches of `remote` (`refs/remotes/REMOTE/BRANCH`), by branch name.
    pub fn remote_refs(&self, remote: &str) -> Result<Vec<(String, CommitId)>> {
        self.refs
            .list(&format!("refs/remotes/{remote}/"))?
            .into_iter()
            .map(|(n, v)| Ok((n, v.parse()?)))
            .collect()
    }

    /// Set (or with `None` delete) the remote-tracking branch `refs/remotes/REMOTE/BRANCH`. The
    /// commit must be present.
    pub fn set_remote_ref(
        &mut self,
        remote: &str,
        branch: &str,
        target: Option<&CommitId>,
    ) -> Result<()> {
        self.writable("changing a remote-tracking ref")?;
        crate::revision::validate_ref_name("remote", remote)?;
        crate::revision::validate_ref_name("branch", branch)?;
        let key = format!("refs/remotes/{remote}/{branch}");
        let old = self.refs.read(&key)?;
        if let Some(t) = target {
            self.read_commit(t)?;
        }
        let new = target.map(|t| t.to_hex());
        if old == new {
            return Ok(());
        }
        self.refs.update(&key, old.as_deref(), new.as_deref())?;
        self.log_op(
            "remote-ref",
            serde_json::json!({"ref": key, "old": old, "new": new}),
        )
    }

    /// The bytes of `.srlm/remotes` (`None` when no remote was ever added).
    pub fn remotes_config(&self) -> Result<Option<Vec<u8>>> {
        let p = self.dir.join(REMOTES_FILE);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path: p, err: e }),
        }
    }

    /// Replace `.srlm/remotes` atomically.
    pub fn set_remotes_config(&self, bytes: &[u8]) -> Result<()> {
        self.writable("changing the remotes")?;
        crate::fsutil::write_atomic(&self.tmp_dir(), &self.dir.join(REMOTES_FILE), bytes)
    }

    /// Mark this store as a partial (lazy) clone: pieces may be absent on purpose, to be
    /// fetched from a remote when needed; fsck counts absent pieces instead of reporting them.
    pub fn mark_partial(&self) -> Result<()> {
        self.writable("marking a lazy clone")?;
        crate::fsutil::write_atomic(&self.tmp_dir(), &self.dir.join("partial"), b"lazy\n")
    }

    /// Whether this store is a partial (lazy) clone.
    pub fn is_partial(&self) -> bool {
        self.dir.join("partial").exists()
    }

    /// Drop every remote-tracking ref of `remote` (when the remote is removed).
    pub fn delete_remote_refs(&mut self, remote: &str) -> Result<()> {
        for (b, _) in self.remote_refs(remote)? {
            self.set_remote_ref(remote, &b, None)?;
        }
        Ok(())
    }
}

/// The piece ids of a pack index received as bytes, after checking that it is well formed and
/// that its digest is the pack's `name`.
pub fn parse_pack_index(name: &str, idx: &[u8]) -> Result<Vec<ObjectId>> {
    let shown = format!("pack index {name}");
    let ix = PackIndex::from_bytes(name.to_string(), idx.to_vec(), &shown)?;
    if hex::encode(&idx[idx.len() - 32..]) != name {
        return Err(StoreError::BadPath {
            path: shown,
            reason: "its digest is not its name".into(),
        });
    }
    Ok(ix.entries().map(|e| e.id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CommitOptions;

    fn store_with_history() -> (tempfile::TempDir, Store, Vec<CommitId>) {
        let t = tempfile::tempdir().unwrap();
        let mut s = Store::init(t.path()).unwrap();
        let wd = s.workdir().to_path_buf();
        let mut ids = Vec::new();
        for i in 0..3 {
            std::fs::write(wd.join("d.jsonl"), format!("{{\"i\":{i}}}\n{{\"x\":1}}\n")).unwrap();
            std::fs::write(wd.join("m.bin"), vec![i as u8; 70_000]).unwrap();
            s.add(&wd, &[PathBuf::from(".")]).unwrap();
            let opts = CommitOptions {
                message: format!("c{i}"),
                ..Default::default()
            };
            ids.push(s.commit(&opts).unwrap());
        }
        (t, s, ids)
    }

    #[test]
    fn closure_lists_dependencies_first_and_stops_at_what_is_had() {
        let (_t, s, ids) = store_with_history();
        let all = s.closure(&[ids[2].0], &HashSet::new()).unwrap();
        let pos: std::collections::HashMap<_, _> = all
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (*o, i))
            .collect();
        for o in &all.objects {
            let (links, _) = object_links(o, &s.get_object(o).unwrap()).unwrap();
            for l in links.iter().filter(|l| pos.contains_key(*l)) {
                assert!(pos[l] < pos[o], "{l} must come before {o}");
            }
        }
        assert_eq!(*all.objects.last().unwrap(), ids[2].0);
        assert!(all.pieces.len() >= 4);
        // what the first commit reaches is not listed again
        let had: HashSet<ObjectId> = s
            .closure(&[ids[0].0], &HashSet::new())
            .unwrap()
            .objects
            .into_iter()
            .collect();
        let new = s.closure(&[ids[2].0], &had).unwrap();
        assert!(new.objects.iter().all(|o| !had.contains(o)));
        assert!(new.objects.len() < all.objects.len());
        assert!(s.is_ancestor(&ids[0], &ids[2]).unwrap());
        assert!(!s.is_ancestor(&ids[2], &ids[0]).unwrap());
    }

    #[test]
    fn imported_packs_are_verified_piece_by_piece() {
        let (_t, a, _) = store_with_history();
        let t2 = tempfile::tempdir().unwrap();
        let b = Store::init(t2.path()).unwrap();
        let name = a.pack_names().unwrap().remove(0);
        let (pack, idx) = a.pack_files(&name);
        let idx_bytes = std::fs::read(&idx).unwrap();
        assert!(
            parse_pack_index("00", &idx_bytes).is_err(),
            "name must match"
        );
        let ids = parse_pack_index(&name, &idx_bytes).unwrap();
        // a flipped byte: refused, nothing added
        let mut bad = std::fs::read(&pack).unwrap();
        let n = bad.len();
        bad[n - 2] ^= 0x10;
        let mut tmp = b.temp_file().unwrap();
        std::io::Write::write_all(&mut tmp, &bad).unwrap();
        assert!(b.import_pack(&name, tmp, &idx_bytes).is_err());
        assert!(b.pack_names().unwrap().is_empty());
        let mut tmp = b.temp_file().unwrap();
        std::io::Write::write_all(&mut tmp, &std::fs::read(&pack).unwrap()).unwrap();
        b.import_pack(&name, tmp, &idx_bytes).unwrap();
        assert_eq!(b.pack_names().unwrap(), vec![name]);
        assert!(ids.iter().all(|id| b.has_piece(id).unwrap()));
    }
}
