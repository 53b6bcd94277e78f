//! `srlm diff` on two checkpoints: which files and tensors changed, how many values, the largest
//! absolute difference (the same comparison `reproduce` makes, [`crate::stages::compare`]), and
//! the bytes the second checkpoint added to the store (its pieces the first lacks).
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use srlm_store::{
    folder_files, EntryKind, FolderManifest, ManifestId, ObjectId, Store, Tree, TreeEntry,
};

use super::DatasetError;
use crate::stages::compare::{describe_tensor, diff_tensors, TensorDiff};

/// How one checkpoint changed between two revisions.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointChange {
    pub path: String,
    /// Files added, removed or changed (relative to the checkpoint folder).
    pub files_changed: Vec<String>,
    /// The tensors that differ, one line each (`NAME: k/n values, max abs diff x`).
    pub tensors: Vec<String>,
    /// Tensors compared (in the safetensors files present on both sides).
    pub tensors_compared: usize,
    /// Bytes of the second checkpoint's pieces the first one does not share (before
    /// compression): what it added to the store beyond the first.
    pub added_bytes: u64,
}

/// Every tree entry, with each folder that is a unit on either side (`dirs`) as one entry; a
/// folder that is a unit only on the other side gets the id its files would have as one.
pub fn collapsed(tree: &Tree, dirs: &BTreeSet<String>) -> BTreeMap<String, TreeEntry> {
    let inside = |p: &str| dirs.iter().any(|d| p.starts_with(&format!("{d}/")));
    let mut out: BTreeMap<String, TreeEntry> = tree
        .entries
        .iter()
        .filter(|(p, _)| !inside(p))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    for d in dirs {
        if let Some(u) = tree.units.get(d) {
            out.insert(d.clone(), u.clone());
            continue;
        }
        let files = folder_files(&tree.entries, d);
        if files.is_empty() {
            continue;
        }
        let m = FolderManifest { files };
        out.insert(
            d.clone(),
            TreeEntry {
                kind: EntryKind::Checkpoint,
                id: ManifestId(ObjectId::of(&m.encode())),
                size: m.size(),
                rows: None,
            },
        );
    }
    out
}

/// The files of checkpoint `path` in `tree` (a unit's files, or the file itself).
fn files(tree: &Tree, path: &str) -> BTreeMap<String, TreeEntry> {
    match tree.entries.get(path) {
        Some(e) => [(
            path.rsplit('/').next().unwrap_or(path).to_string(),
            e.clone(),
        )]
        .into(),
        None => folder_files(&tree.entries, path),
    }
}

/// Compare checkpoint `path` of tree `a` (absent: added) with that of tree `b`.
pub fn diff_checkpoint(
    store: &Store,
    path: &str,
    a: Option<&Tree>,
    b: &Tree,
) -> Result<CheckpointChange, DatasetError> {
    let err = |e: &dyn std::fmt::Display| DatasetError::Store {
        file: path.to_string(),
        message: e.to_string(),
    };
    let fa = a.map(|t| files(t, path)).unwrap_or_default();
    let fb = files(b, path);
    let names: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let mut out = CheckpointChange {
        path: path.to_string(),
        files_changed: Vec::new(),
        tensors: Vec::new(),
        tensors_compared: 0,
        added_bytes: 0,
    };
    let scratch = tempfile::tempdir().map_err(|e| err(&e))?;
    for name in names {
        let (ea, eb) = (fa.get(name), fb.get(name));
        if ea.map(|e| e.id) == eb.map(|e| e.id) {
            continue;
        }
        out.files_changed.push(name.clone());
        let (Some(ea), Some(eb)) = (ea, eb) else {
            continue;
        };
        if !name.ends_with(".safetensors") {
            continue;
        }
        let (pa, pb) = (scratch.path().join("a"), scratch.path().join("b"));
        write(store, ea, &pa).map_err(|e| err(&e))?;
        write(store, eb, &pb).map_err(|e| err(&e))?;
        let d = diff_tensors(&pa, &pb).map_err(|e| err(&e))?;
        out.tensors_compared += tensor_count(&pb);
        out.tensors.extend(
            d.iter()
                .filter(|(_, t)| !matches!(t, TensorDiff::Values { differing: 0, .. }))
                .map(|(n, t)| describe_tensor(n, t)),
        );
    }
    // pieces of b that a lacks, counted once
    let mut have: BTreeSet<ObjectId> = BTreeSet::new();
    for e in fa.values() {
        have.extend(
            pieces(store, e)
                .map_err(|e| err(&e))?
                .into_iter()
                .map(|(id, _)| id),
        );
    }
    for e in fb.values() {
        for (id, len) in pieces(store, e).map_err(|e| err(&e))? {
            if have.insert(id) {
                out.added_bytes += len as u64;
            }
        }
    }
    Ok(out)
}

fn pieces(store: &Store, e: &TreeEntry) -> Result<Vec<(ObjectId, u32)>, srlm_store::StoreError> {
    Ok(store
        .read_manifest(&e.id)?
        .pieces()
        .iter()
        .map(|(b, l)| (b.0, *l))
        .collect())
}

fn write(store: &Store, e: &TreeEntry, dest: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut r = store.open_entry(e)?;
    let mut f = std::fs::File::create(dest)?;
    std::io::copy(&mut r, &mut f)?;
    Ok(())
}

fn tensor_count(path: &Path) -> usize {
    std::fs::read(path)
        .ok()
        .and_then(|b| {
            safetensors::SafeTensors::deserialize(&b)
                .ok()
                .map(|t| t.len())
        })
        .unwrap_or(0)
}
