//! A checkpoint is one unit: a folder holding `srlm-checkpoint.json` (what srlm's training
//! stages write) or a Hugging Face `model.safetensors` (or its shard index) is committed as one
//! tree entry of kind `checkpoint` whose id is a folder manifest over its files (the store's
//! units, [`srlm_store::UnitRule`]); a GGUF file is a checkpoint by itself. Stages take and
//! give such a folder as one role, lineage shows it as one node, `reproduce` as one row.
use std::collections::BTreeMap;
use std::path::Path;

use srlm_store::{folder_files, EntryKind, ManifestId, ObjectId, Store, StoreError, TreeEntry};

use crate::engine::checkpoint::{META_FILE, WEIGHTS_FILE};

/// The files whose presence makes a folder a checkpoint.
pub const MARKERS: [&str; 3] = [META_FILE, WEIGHTS_FILE, "model.safetensors.index.json"];

/// The store's unit rules for checkpoints (passed with every commit).
pub fn rules() -> Vec<srlm_store::UnitRule> {
    MARKERS
        .iter()
        .map(|m| srlm_store::UnitRule {
            marker: m.to_string(),
            kind: EntryKind::Checkpoint,
        })
        .collect()
}

/// Whether a folder on disk is a checkpoint.
pub fn is_checkpoint_dir(dir: &Path) -> bool {
    dir.is_dir() && MARKERS.iter().any(|m| dir.join(m).is_file())
}

/// The unit entry of tree folder `dir` among `entries` (stored), if its files make a
/// checkpoint.
pub fn unit_of(
    store: &Store,
    entries: &BTreeMap<String, TreeEntry>,
    dir: &str,
) -> Result<Option<TreeEntry>, StoreError> {
    let files = folder_files(entries, dir);
    if !MARKERS.iter().any(|m| files.contains_key(*m)) {
        return Ok(None);
    }
    Ok(Some(store.put_folder(&files, EntryKind::Checkpoint)?))
}

/// The files of object `id` when it is a unit (paths relative to its folder), else `None`.
pub fn files_of(
    store: &Store,
    id: ObjectId,
) -> Result<Option<BTreeMap<String, TreeEntry>>, StoreError> {
    Ok(store.read_folder(&ManifestId(id))?.map(|f| f.files))
}
