//! `fsck`: re-hash every object and piece, and check every reference (refs → commits → trees →
//! manifests → pieces, run records, the staging area, pins); report what gc would refuse over
//! (commits that look lost), unreadable pack indexes (and whether repair can rebuild them), an
//! index that cannot be opened (rebuilt by the next write), and unknown files in `.srlm/`.
use std::collections::HashMap;

use serde::Serialize;

use crate::objects::{tag_of, Manifest, RunObject};
use crate::pack::{PackIndex, Packs};
use crate::refs::RefStore;
use crate::{Commit, ObjectId, Result, Store, Tree};

/// What `fsck` checked and found. `problems` are corruption or dangling references; `notes` are
/// harmless leftovers (temp files of interrupted writes) that `gc` removes.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    pub loose_objects: u64,
    pub packs: u64,
    pub pieces: u64,
    pub refs: u64,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Verify the whole store. Never modifies it.
    pub fn fsck(&self) -> Result<FsckReport> {
        let mut rep = FsckReport::default();
        let packs_dir = self.store_dir().join("packs");
        // 1. packs: every piece re-hashed (frames read in file order, each decompressed once)
        let mut pieces: HashMap<ObjectId, u32> = HashMap::new();
        let mut reader = Packs::new(packs_dir.clone());
        for name in Packs::names(&packs_dir)? {
            let ix = match PackIndex::load(&packs_dir.join(format!("{name}.idx"))) {
                Ok(ix) => ix,
                Err(e) => {
                    let fix =
                        match crate::pack::rebuild_index(&packs_dir.join(format!("{name}.pack"))) {
                            Ok((_, n)) if n == name => {
                                "repair rebuilds it from the pack's frame headers".to_string()
                            }
                            Ok(_) => {
                                "the pack does not match its name; it cannot be rebuilt".into()
                            }
                            Err(e) => format!("it cannot be rebuilt: {e}"),
                        };
                    rep.problems.push(format!("{e} ({fix})"));
                    continue;
                }
            };
            rep.packs += 1;
            let mut entries: Vec<_> = ix.entries().collect();
            entries.sort_by_key(|e| (e.frame_off, e.off));
            for e in entries {
                rep.pieces += 1;
                match reader.read_entry(&name, &e) {
                    Ok(_) => {
                        pieces.insert(e.id, e.len);
                    }
                    Err(err) => rep.problems.push(format!("pack {name}: {err}")),
                }
            }
        }
        // 2. loose objects: re-hashed, decoded, references collected
        let mut kinds: HashMap<ObjectId, &'static str> = HashMap::new();
        let mut manifests: HashMap<ObjectId, (bool, u64, u64)> = HashMap::new();
        let mut wants: Vec<(ObjectId, ObjectId, &'static str)> = Vec::new();
        let mut trees: Vec<(ObjectId, Tree)> = Vec::new();
        // a lazy clone lacks pieces on purpose: absent (not corrupt) ones are only counted
        let partial = self.is_partial();
        let mut not_fetched = 0u64;
        for id in crate::odb::ObjectDb::list_objects(&self.odb)? {
            rep.loose_objects += 1;
            let raw = match self.get_object(&id) {
                Ok(r) => r,
                Err(e) => {
                    rep.problems.push(e.to_string());
                    continue;
                }
            };
            let kind = tag_of(&raw).unwrap_or("object");
            let parsed: Result<()> = (|| {
                match kind {
                    "commit" => {
                        let c = Commit::decode(&id, &raw)?;
                        wants.push((id, c.tree.0, "tree"));
                        wants.extend(c.parents.iter().map(|p| (id, p.0, "commit")));
                        wants.extend(c.run.iter().map(|r| (id, r.0, "run")));
                    }
                    "tree" => trees.push((id, Tree::decode(&id, &raw)?)),
                    "manifest" => {
                        let m = Manifest::decode(&id, &raw)?;
                        for (piece, len) in m.pieces() {
                            match pieces.get(&piece.0) {
                                Some(l) if l == len => {}
                                Some(_) => rep.problems.push(format!(
                                    "manifest {id}: piece {piece} has the wrong length"
                                )),
                                None if partial && !self.odb.packs().contains(&piece.0)? => {
                                    not_fetched += 1
                                }
                                None => rep.problems.push(format!(
                                    "manifest {id}: piece {piece} is missing or corrupt"
                                )),
                            }
                        }
                        let rows = match &m {
                            Manifest::Rows(r) => (true, r.rows.len() as u64),
                            Manifest::Chunks(_) => (false, 0),
                        };
                        manifests.insert(id, (rows.0, m.size(), rows.1));
                    }
                    "run" => {
                        RunObject::decode(&id, &raw)?;
                    }
                    "folder" => {
                        crate::FolderManifest::decode(&id, &raw)?;
                    }
                    _ => {}
                }
                Ok(())
            })();
            match parsed {
                Ok(()) => {
                    kinds.insert(id, kind);
                }
                Err(e) => rep.problems.push(e.to_string()),
            }
        }
        for (tid, t) in &trees {
            for (path, u) in &t.units {
                // a unit names a folder manifest over exactly the tree's files under it
                let ok = kinds.get(&u.id.0) == Some(&"folder")
                    && self.read_folder(&u.id).ok().flatten().is_some_and(|f| {
                        f.files == crate::folder_files(&t.entries, path) && f.size() == u.size
                    });
                if !ok {
                    rep.problems.push(format!(
                        "tree {tid}: unit '{path}' ({}) disagrees with the files under it or is missing",
                        u.id
                    ));
                }
            }
            for (path, e) in &t.entries {
                match manifests.get(&e.id.0) {
                    None => rep.problems.push(format!(
                        "tree {tid}: '{path}' names manifest {} which is missing or corrupt",
                        e.id
                    )),
                    Some(&(is_rows, size, rows)) => {
                        let want_rows = e.kind == crate::EntryKind::Dataset;
                        if is_rows != want_rows
                            || size != e.size
                            || (want_rows && e.rows != Some(rows))
                        {
                            rep.problems.push(format!(
                                "tree {tid}: '{path}' disagrees with its manifest (kind/size/rows)"
                            ));
                        }
                    }
                }
            }
        }
        for (from, to, want) in wants {
            match kinds.get(&to) {
                Some(k) if *k == want => {}
                _ => rep
                    .problems
                    .push(format!("{from}: {want} {to} is missing or corrupt")),
            }
        }
        // 3. refs and the staging area
        let mut refs: Vec<(String, String)> = self
            .refs
            .list("refs/")?
            .into_iter()
            .map(|(n, v)| (format!("refs/{n}"), v))
            .collect();
        match self.refs.read("HEAD")? {
            Some(h) if !h.starts_with("ref: refs/heads/") => refs.push(("HEAD".into(), h)),
            Some(_) => {}
            None => rep.problems.push("HEAD is missing (.srlm/HEAD)".into()),
        }
        for (name, id) in self.pins()? {
            refs.push((format!("pin {name}"), id.to_hex()));
        }
        for (name, v) in refs {
            rep.refs += 1;
            match v.parse::<ObjectId>() {
                Ok(id) if kinds.get(&id) == Some(&"commit") => {}
                Ok(id) if name.starts_with("pin ") && kinds.contains_key(&id) => {}
                _ => rep
                    .problems
                    .push(format!("ref {name} points at a missing commit {v}")),
            }
        }
        for (path, e) in self.staged()?.entries {
            if !manifests.contains_key(&e.id.0) {
                rep.problems
                    .push(format!("staged '{path}': manifest {} is missing", e.id));
            }
        }
        // 4. what gc would refuse over, the index, unknown files
        // (a corrupt object in the graph is reported above; gc refuses to run past it)
        if let Ok((reachable, _)) = self.reachable() {
            let lost = self.lost_commits(&reachable)?;
            if !lost.is_empty() {
                rep.problems.push(format!(
                    "{} commit(s) that were a ref's value are no longer reachable from any ref \
                     (refs lost?): {}; tag or branch them to keep them",
                    lost.len(),
                    lost.iter()
                        .map(|c| c.to_hex())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            let unreferenced = kinds
                .iter()
                .filter(|(id, k)| **k == "commit" && !reachable.contains(id))
                .count();
            if unreferenced > 0 {
                rep.notes.push(format!(
                    "{unreferenced} commit(s) no branch, tag or HEAD reaches (gc removes them)"
                ));
            }
        }
        if self.store_dir().join("index").exists() && self.index_if_available().is_none() {
            rep.notes.push(
                "the index (.srlm/index, derived data only) cannot be opened now; the next \
                 command that writes rebuilds it"
                    .into(),
            );
        }
        if let Ok(rd) = std::fs::read_dir(self.store_dir()) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !crate::store::KNOWN_ENTRIES.contains(&n.as_str()) {
                    rep.notes.push(format!(
                        ".srlm/{n} is not a file srlm knows (gc neither keeps nor reads it)"
                    ));
                }
            }
        }
        if not_fetched > 0 {
            rep.notes.push(format!(
                "{not_fetched} piece(s) not fetched yet (a lazy clone: they stay on the remote)"
            ));
        }
        // 5. leftovers of interrupted writes
        let tmp = std::fs::read_dir(self.tmp_dir())
            .map(|d| d.count())
            .unwrap_or(0);
        if tmp > 0 {
            rep.notes.push(format!(
                "{tmp} temp file(s) of interrupted writes in .srlm/tmp (the next command that \
                 writes removes them)"
            ));
        }
        let orphans = orphan_packs(&packs_dir)?;
        if !orphans.is_empty() {
            rep.notes.push(format!(
                "{} pack(s) without an index, left by an interrupted add (gc removes them)",
                orphans.len()
            ));
        }
        Ok(rep)
    }
}

/// `.pack` files with no `.idx` beside them.
pub(crate) fn orphan_packs(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().map(|x| x == "pack").unwrap_or(false)
                && !p.with_extension("idx").exists()
            {
                out.push(p);
            }
        }
    }
    Ok(out)
}
