//! `gc`: remove what no ref, no staged file, no pin and no reachable run record can reach. Loose
//! objects go first (top-down), then packs are dropped or rewritten with their reachable pieces
//! only, so an interrupted gc leaves only more garbage, never a dangling reference.
//!
//! gc refuses (unless forced) when a commit that the op log shows was once a ref's value, and
//! never shows being moved away from, is no longer reachable: refs were lost, not moved, and
//! deleting would make the loss permanent. A pack whose index cannot be read is left alone.
use std::collections::HashSet;

use serde::Serialize;

use crate::error::{IoContext, Result, StoreError};
use crate::objects::{tag_of, Manifest, RunObject};
use crate::pack::{PackIndex, PackWriter, Packs};
use crate::refs::RefStore;
use crate::{Commit, ObjectId, Store, Tree};

/// What `gc` removed (or, with `dry_run`, would remove).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub loose_removed: u64,
    pub pieces_removed: u64,
    pub packs_removed: u64,
    pub packs_rewritten: u64,
    pub leftovers_removed: u64,
    pub bytes_freed: u64,
}

/// 64-hex strings anywhere in a JSON value (ids a run record mentions, e.g. a stored patch).
pub(crate) fn hex_ids(v: &serde_json::Value, out: &mut Vec<ObjectId>) {
    match v {
        serde_json::Value::String(s) => {
            for word in s.split(|c: char| !c.is_ascii_hexdigit()) {
                if let Ok(id) = word.parse() {
                    out.push(id);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| hex_ids(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| hex_ids(x, out)),
        _ => {}
    }
}

impl Store {
    /// Objects reachable from refs, HEAD, the staging area and pins: (loose, pieces).
    pub(crate) fn reachable(&self) -> Result<(HashSet<ObjectId>, HashSet<ObjectId>)> {
        let mut queue: Vec<ObjectId> = Vec::new();
        for (_, v) in self.refs.list("refs/")? {
            queue.extend(v.parse::<ObjectId>().ok());
        }
        if let Some(h) = self.refs.read("HEAD")? {
            queue.extend(h.parse::<ObjectId>().ok());
        }
        queue.extend(self.staged()?.entries.into_values().map(|e| e.id.0));
        queue.extend(self.pins()?.into_iter().map(|(_, id)| id));
        let (mut loose, mut pieces) = (HashSet::new(), HashSet::new());
        while let Some(id) = queue.pop() {
            if !loose.insert(id) {
                continue;
            }
            let raw = match crate::loose::get(self.odb.objects_dir(), &id)? {
                Some(r) => r,
                None => {
                    loose.remove(&id);
                    continue;
                }
            };
            match tag_of(&raw) {
                Some("commit") => {
                    let c = Commit::decode(&id, &raw)?;
                    queue.push(c.tree.0);
                    queue.extend(c.parents.iter().map(|p| p.0));
                    queue.extend(c.run.iter().map(|r| r.0));
                }
                Some("tree") => {
                    let t = Tree::decode(&id, &raw)?;
                    queue.extend(t.entries.values().chain(t.units.values()).map(|e| e.id.0))
                }
                Some("folder") => queue.extend(
                    crate::FolderManifest::decode(&id, &raw)?
                        .files
                        .values()
                        .map(|e| e.id.0),
                ),
                Some("manifest") => pieces.extend(
                    Manifest::decode(&id, &raw)?
                        .pieces()
                        .iter()
                        .map(|(b, _)| b.0),
                ),
                Some("run") => {
                    // A reachable run keeps what it names: inputs, outputs and any id in it.
                    let r = RunObject::decode(&id, &raw)?;
                    queue.extend(r.inputs.iter().chain(r.outputs.iter()).copied());
                    if let Ok(v) = serde_json::from_slice(&r.record) {
                        hex_ids(&v, &mut queue);
                    }
                }
                _ => {
                    if let Ok(v) = serde_json::from_slice(&raw) {
                        hex_ids(&v, &mut queue);
                    }
                }
            }
        }
        Ok((loose, pieces))
    }

    /// Commits no ref reaches that the op log shows were set as a ref's value and never moved
    /// away from: signs that refs were lost (see the module docs).
    pub(crate) fn lost_commits(&self, reachable: &HashSet<ObjectId>) -> Result<Vec<ObjectId>> {
        let (mut set, mut left) = (HashSet::new(), HashSet::new());
        for op in self.oplog()? {
            let d = &op["detail"];
            for (key, into) in [("new", &mut set), ("old", &mut left)] {
                if let Some(id) = d[key].as_str().and_then(|s| s.parse::<ObjectId>().ok()) {
                    into.insert(id);
                }
            }
        }
        let mut lost: Vec<ObjectId> = set
            .into_iter()
            .filter(|id| !reachable.contains(id) && !left.contains(id))
            .filter(|id| crate::loose::path_of(self.odb.objects_dir(), id).exists())
            .collect();
        // of a lost chain, the parents are no news: name the tips
        let mut parents = HashSet::new();
        for id in &lost {
            if let Ok(c) = self.read_commit(&crate::CommitId(*id)) {
                parents.extend(c.parents.iter().map(|p| p.0));
            }
        }
        lost.retain(|id| !parents.contains(id));
        lost.sort();
        Ok(lost)
    }

    /// Remove unreachable objects (or only count them, with `dry_run`). Refuses when refs look
    /// lost ([`StoreError::GcUnreferencedCommits`]); see [`Store::gc_forced`].
    pub fn gc(&mut self, dry_run: bool) -> Result<GcReport> {
        self.gc_forced(dry_run, false)
    }

    /// [`Store::gc`]; with `force`, also when commits look lost (they are deleted).
    pub fn gc_forced(&mut self, dry_run: bool, force: bool) -> Result<GcReport> {
        self.writable("gc")?;
        let (loose, pieces) = self.reachable()?;
        if !force {
            let lost = self.lost_commits(&loose)?;
            if !lost.is_empty() {
                return Err(StoreError::GcUnreferencedCommits(lost));
            }
        }
        let mut rep = GcReport {
            dry_run,
            ..Default::default()
        };
        let objects = self.odb.objects_dir().to_path_buf();
        let mut removed_loose = HashSet::new();
        for id in crate::loose::list(&objects)? {
            if loose.contains(&id) {
                continue;
            }
            let p = crate::loose::path_of(&objects, &id);
            rep.loose_removed += 1;
            rep.bytes_freed += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            removed_loose.insert(id);
            if !dry_run {
                std::fs::remove_file(&p).at(&p)?;
            }
        }
        let packs_dir = self.store_dir().join("packs");
        let mut reader = Packs::new(packs_dir.clone());
        for name in Packs::names(&packs_dir)? {
            // unreadable index: what the pack holds is unknown, so it is kept (fsck says how
            // to repair it)
            let Ok(ix) = PackIndex::load(&packs_dir.join(format!("{name}.idx"))) else {
                continue;
            };
            let keep: Vec<_> = ix.entries().filter(|e| pieces.contains(&e.id)).collect();
            if keep.len() == ix.len() {
                continue;
            }
            rep.pieces_removed += (ix.len() - keep.len()) as u64;
            let pack = packs_dir.join(format!("{name}.pack"));
            let idx = packs_dir.join(format!("{name}.idx"));
            let old = std::fs::metadata(&pack).map(|m| m.len()).unwrap_or(0)
                + std::fs::metadata(&idx).map(|m| m.len()).unwrap_or(0);
            if keep.is_empty() {
                rep.packs_removed += 1;
                rep.bytes_freed += old;
            } else {
                rep.packs_rewritten += 1;
                if !dry_run {
                    let mut w = PackWriter::new(&self.tmp_dir())?;
                    let mut keep = keep;
                    keep.sort_by_key(|e| (e.frame_off, e.off));
                    for e in &keep {
                        let data = reader.read_entry(&name, e)?;
                        if e.off == 0 && e.len == e.frame_raw_len {
                            w.put_chunk(e.id, &data, e.zstd)?;
                        } else {
                            w.put_row(e.id, &data)?;
                        }
                    }
                    let new = w.finish(&packs_dir, &self.tmp_dir())?;
                    if let Some(n) = new {
                        let size = |ext: &str| {
                            std::fs::metadata(packs_dir.join(format!("{n}.{ext}")))
                                .map(|m| m.len())
                                .unwrap_or(0)
                        };
                        rep.bytes_freed += old.saturating_sub(size("pack") + size("idx"));
                    }
                }
            }
            if !dry_run {
                // index first: a pack without an index is ignored, never half-read
                std::fs::remove_file(&idx).at(&idx)?;
                std::fs::remove_file(&pack).at(&pack)?;
            }
        }
        let mut leftovers: Vec<std::path::PathBuf> = crate::fsck::orphan_packs(&packs_dir)?;
        if let Ok(rd) = std::fs::read_dir(self.tmp_dir()) {
            leftovers.extend(rd.flatten().map(|e| e.path()));
        }
        for p in leftovers {
            rep.leftovers_removed += 1;
            rep.bytes_freed += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                std::fs::remove_file(&p).at(&p)?;
            }
        }
        if !dry_run {
            self.odb.packs().reload();
            // Drop index entries that name removed objects.
            let ix = self.index()?;
            ix.mark_dirty();
            for kv in ix.stat.iter() {
                let (k, v) = kv.map_err(|e| ix.err(e))?;
                let gone = serde_json::from_slice::<crate::index::StatEntry>(&v)
                    .map(|s| removed_loose.contains(&s.entry.id.0))
                    .unwrap_or(true);
                if gone {
                    ix.stat.remove(k).map_err(|e| ix.err(e))?;
                }
            }
            for tree in [&ix.produced, &ix.consumed] {
                for kv in tree.iter() {
                    let (k, _) = kv.map_err(|e| ix.err(e))?;
                    let run = ObjectId(k[32..64].try_into().map_err(|e| ix.err(e))?);
                    if removed_loose.contains(&run) {
                        tree.remove(k).map_err(|e| ix.err(e))?;
                    }
                }
            }
            ix.flush()?;
            self.log_op("gc", serde_json::to_value(&rep).expect("report serialises"))?;
        }
        Ok(rep)
    }
}
