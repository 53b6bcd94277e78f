//! A stage's inputs: a reference (`REV:path`, a working-tree path, or an absolute path outside
//! the working directory) resolved to an object id and a file the stage reads.
//!
//! An outside file (a model in a Hugging Face cache, a dataset on a shared disk) is an
//! *external* input, as DVC's external dependencies: hashed through the store's stat cache (an
//! unchanged 14 GB model costs a stat), recorded by id and absolute path
//! ([`ObjectRef::external_path`]), read in place, and copied into the store only when the stage
//! asks ([`super::record::Stage::store_inputs`]). Before a recorded external input is used
//! again, [`external_state`] checks that it still has its recorded id.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use srlm_store::{AddProgress, EntryKind, ManifestId, ObjectId, Store, TreeEntry};

use super::record::{Progress, RecordError, Stage};
use crate::provenance::{InputSource, ObjectRef};

/// A resolved input: its object and where the stage reads it.
pub(crate) struct Resolved {
    pub obj: ObjectRef,
    pub path: PathBuf,
}

/// Resolve every input to an object (hashing working-tree and outside files now, before the
/// stage runs) and a readable path (committed files not in the working tree are written to
/// `scratch`).
pub(crate) fn resolve_inputs(
    store: &mut Store,
    stage: &Stage,
    scratch: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<BTreeMap<String, Resolved>, RecordError> {
    let mut out = BTreeMap::new();
    for (role, reference) in &stage.inputs {
        let bad = |reason: String| RecordError::BadInput {
            stage: stage.name.clone(),
            role: role.clone(),
            reference: reference.clone(),
            reason,
        };
        if out.contains_key(role) {
            return Err(bad("the same role is given twice".into()));
        }
        let r = if Path::new(reference).is_absolute() {
            resolve_external(store, Path::new(reference), stage.store_inputs, progress)
        } else {
            resolve_input(store, reference, scratch)
        };
        out.insert(role.clone(), r.map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// An absolute path: inside the working directory it is a working-tree input like any other;
/// outside, an external input (stored too when `store_it`).
fn resolve_external(
    store: &mut Store,
    abs: &Path,
    store_it: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Resolved, RecordError> {
    let workdir = store.workdir().to_path_buf();
    let real = std::fs::canonicalize(abs).map_err(|err| RecordError::Io {
        path: abs.to_path_buf(),
        err,
    })?;
    if let Ok(rel) = real.strip_prefix(&workdir) {
        return resolve_input(store, &rel.to_string_lossy(), Path::new(""));
    }
    // recorded as the user named it (a link in a model cache stays the name they know)
    let abs = std::path::absolute(abs).map_err(|err| RecordError::Io {
        path: abs.to_path_buf(),
        err,
    })?;
    let mut hashing = |p: AddProgress| {
        let AddProgress::File { path, size } = p;
        progress(Progress {
            done: 0,
            total: 0,
            message: &format!("hashing {path} ({})", human_bytes(size)),
        });
    };
    let f = if store_it {
        store.store_external(&abs, &mut hashing)?
    } else {
        store.hash_external(&abs, &mut hashing)?
    };
    let path = abs.to_string_lossy().into_owned();
    Ok(Resolved {
        obj: ObjectRef {
            external_path: Some(path.clone()),
            ..ObjectRef::new(f.entry.id.0, f.entry.kind, path)
        },
        path: abs,
    })
}

/// The files under folder `dir` (recursively, sorted; names starting with `.` skipped) as
/// inputs `(role/REL, prefix/REL)`.
pub fn folder_inputs(
    role: &str,
    dir: &Path,
    prefix: &str,
) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // follows links: a model cache's snapshot folder holds links to its blobs
            let md = std::fs::metadata(e.path())?;
            if md.is_dir() {
                stack.push((e.path(), r));
            } else if md.is_file() {
                let p = prefix.trim_end_matches('/');
                out.push((format!("{role}/{r}"), format!("{p}/{r}")));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `1.2 GB`-style sizes for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `reference` is a path relative to the working directory, or `REV:path`.
fn resolve_input(
    store: &mut Store,
    reference: &str,
    scratch: &Path,
) -> Result<Resolved, RecordError> {
    let (obj, local) = resolve_object(store, reference)?;
    if let Some(path) = local {
        return Ok(Resolved { obj, path });
    }
    let dest = scratch.join(obj.id.to_string()).join(&obj.path);
    materialise(store, &obj, &dest)?;
    Ok(Resolved { obj, path: dest })
}

/// Resolve a reference (a path relative to the working directory, `REV:path`, or an absolute
/// path: an external input) to its object, and the file holding exactly that object, if there
/// is one. A working-tree file
/// is staged (hashed now), so it is committed with the outputs and stays reachable.
pub fn resolve_object(
    store: &mut Store,
    reference: &str,
) -> Result<(ObjectRef, Option<PathBuf>), RecordError> {
    if Path::new(reference).is_absolute() {
        let r = resolve_external(store, Path::new(reference), false, &mut |_| {})?;
        return Ok((r.obj, Some(r.path)));
    }
    let workdir = store.workdir().to_path_buf();
    let local = workdir.join(reference);
    if !reference.contains(':') || local.exists() {
        let tp = store.tree_path(&workdir, Path::new(reference))?;
        store.add(&workdir, &[PathBuf::from(&tp)])?;
        if local.is_dir() {
            // a checkpoint folder is one input; any other folder is not an input at all
            let staged = store.staged()?.entries;
            let e = crate::unit::unit_of(store, &staged, &tp)?.ok_or_else(|| {
                srlm_store::StoreError::BadPath {
                    path: tp.clone(),
                    reason: "a folder is an input only when it is a checkpoint (it holds \
                             srlm-checkpoint.json or model.safetensors)"
                        .into(),
                }
            })?;
            let mut obj = ObjectRef::new(e.id.0, e.kind, tp);
            obj.source = Some(InputSource::WorkingTree);
            return Ok((obj, Some(local)));
        }
        let e = store
            .staged()?
            .entries
            .remove(&tp)
            .ok_or(srlm_store::StoreError::Missing(local.clone()))?;
        let mut obj = ObjectRef::new(e.id.0, e.kind, tp);
        obj.source = Some(InputSource::WorkingTree);
        return Ok((obj, Some(local)));
    }
    let (commit, path, entry) = store.resolve_path(reference)?;
    let mut obj = ObjectRef::new(entry.id.0, entry.kind, path.clone());
    obj.source = Some(InputSource::Commit {
        commit,
        run: store.read_commit(&commit)?.run,
    });
    // the working-tree copy will do when it is that very object (a stat, thanks to the stat cache)
    let wt = workdir.join(&path);
    let same = if crate::unit::files_of(store, entry.id.0)?.is_some() {
        wt.is_dir() && store.hash_folder(&wt, entry.kind).map(|e| e.id).ok() == Some(entry.id)
    } else {
        wt.is_file() && store.hash_file(&path).map(|e| e.id).ok() == Some(entry.id)
    };
    Ok((obj, same.then_some(wt)))
}

/// Write object `obj` to `dest` (creating its directory), byte for byte (verified while read);
/// a unit (a checkpoint folder) becomes the folder `dest` with its files.
pub fn materialise(store: &Store, obj: &ObjectRef, dest: &Path) -> Result<(), RecordError> {
    if let Some(files) = crate::unit::files_of(store, obj.id)? {
        for (name, e) in files {
            write_entry(store, &e, &dest.join(name))?;
        }
        return Ok(());
    }
    write_entry(store, &entry_of(obj.id, obj.kind), dest)
}

fn write_entry(store: &Store, entry: &TreeEntry, dest: &Path) -> Result<(), RecordError> {
    let io = |err| RecordError::Io {
        path: dest.to_path_buf(),
        err,
    };
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut r = store.open_entry(entry)?;
    let mut f = std::fs::File::create(dest).map_err(io)?;
    std::io::copy(&mut r, &mut f).map_err(io)?;
    Ok(())
}

/// A tree entry naming object `id` (enough to read it back).
fn entry_of(id: ObjectId, kind: EntryKind) -> TreeEntry {
    TreeEntry {
        kind,
        id: ManifestId(id),
        size: 0,
        rows: None,
    }
}

/// Where a recorded external input stands now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalState {
    /// The file still has the recorded id.
    Unchanged,
    /// The file is there with other contents (its id now).
    Changed(ObjectId),
    /// No file at the recorded path (or it cannot be read: the reason).
    Gone(String),
}

impl ExternalState {
    /// For messages: `unchanged`, `changed since the run (now …)`, `gone (…)`.
    pub fn describe(&self) -> String {
        match self {
            ExternalState::Unchanged => "unchanged".into(),
            ExternalState::Changed(now) => format!("changed since the run (now {})", now.short()),
            ExternalState::Gone(why) => format!("gone ({why})"),
        }
    }
}

/// Check an external input against its record (a stat when unchanged); `None` for an input
/// inside the working directory.
pub fn external_state(store: &Store, o: &ObjectRef) -> Option<ExternalState> {
    let path = o.external_path.as_deref()?;
    Some(match store.hash_external(Path::new(path), &mut |_| {}) {
        Ok(f) if f.entry.id.0 == o.id => ExternalState::Unchanged,
        Ok(f) => ExternalState::Changed(f.entry.id.0),
        Err(srlm_store::StoreError::Missing(_)) => ExternalState::Gone("no such file".into()),
        Err(e) => ExternalState::Gone(e.to_string()),
    })
}
