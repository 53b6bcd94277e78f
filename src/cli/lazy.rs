//! Lazy clones: fetch from the remote the file bytes a command is about to read, so `show`,
//! `diff`, `reproduce` and `checkout` work on a clone made with `--lazy`.
//!
//! Reading commands open the store read-only; a lazy clone that lacks bytes is opened for
//! writing only for the fetch (and only then), so a complete store is never written by them.
use std::path::Path;

use srlm_store::{ManifestId, Store};

/// The files `spec` names: `REV:PATH` one file (or a folder's files), `REV` every file.
fn entries_of(store: &Store, spec: &str) -> anyhow::Result<Vec<ManifestId>> {
    if let Some((rev, path)) = spec.split_once(':') {
        let tree = store.commit_tree(&store.resolve(rev)?)?;
        let path = path.trim_matches('/');
        return Ok(tree
            .entries
            .iter()
            .filter(|(k, _)| path.is_empty() || *k == path || k.starts_with(&format!("{path}/")))
            .map(|(_, e)| e.id)
            .collect());
    }
    let tree = store.commit_tree(&store.resolve(spec)?)?;
    Ok(tree.entries.into_values().map(|e| e.id).collect())
}

/// In a lazy clone, fetch the bytes of what `specs` (`REV` or `REV:PATH`) name that are not
/// here yet. A store that is not a lazy clone, or lacks nothing, is only read.
pub fn hydrate_specs(cwd: &Path, specs: &[String]) -> anyhow::Result<()> {
    let store = Store::discover_read(cwd)?;
    if !store.is_partial() {
        return Ok(());
    }
    let mut entries = Vec::new();
    for s in specs {
        // a spec that does not resolve is left for the command itself to report
        if let Ok(e) = entries_of(&store, s) {
            entries.extend(e);
        }
    }
    hydrate_entries_reopening(store, cwd, entries)
}

/// Fetch what `entries` lack, reopening `store` (read-only) for writing when needed.
fn hydrate_entries_reopening(
    store: Store,
    cwd: &Path,
    entries: Vec<ManifestId>,
) -> anyhow::Result<()> {
    if srlm_transfer::missing_pieces(&store, entries.iter())?.is_empty() {
        return Ok(());
    }
    // the shared lock must go before the exclusive one is taken
    drop(store);
    let store = Store::discover(cwd)?;
    srlm_transfer::hydrate(&store, entries.iter(), &mut |_| {})?;
    Ok(())
}

/// In a lazy clone, fetch the bytes of `files` (on a store already open for writing).
pub fn hydrate_files(store: &Store, files: &[ManifestId]) -> anyhow::Result<()> {
    if store.is_partial() {
        srlm_transfer::hydrate(store, files.iter(), &mut |_| {})?;
    }
    Ok(())
}
