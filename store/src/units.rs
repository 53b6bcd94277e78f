//! Units: a folder committed as one entry. The application names a marker file
//! ([`UnitRule`]); a folder holding it is, at commit, one unit entry in the tree whose id is a
//! [`FolderManifest`] over its files (which the tree still lists one by one, so checkout, status
//! and transfer work on files as ever, each chunked and deduplicated as any file). The store
//! knows nothing of what a unit is for.
use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{IoContext, Result, StoreError};
use crate::objects::FolderManifest;
use crate::worktree::under;
use crate::{EntryKind, ManifestId, ObjectId, Store, TreeEntry};

/// A folder holding a file named `marker` is one unit of kind `kind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitRule {
    pub marker: String,
    pub kind: EntryKind,
}

/// The entries under folder `dir`, by path relative to it.
pub fn folder_files(
    entries: &BTreeMap<String, TreeEntry>,
    dir: &str,
) -> BTreeMap<String, TreeEntry> {
    let prefix = format!("{dir}/");
    entries
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, e)| (k[prefix.len()..].to_string(), e.clone()))
        .collect()
}

fn unit_entry(m: &FolderManifest, kind: EntryKind) -> (TreeEntry, Vec<u8>) {
    let raw = m.encode();
    let e = TreeEntry {
        kind,
        id: ManifestId(ObjectId::of(&raw)),
        size: m.size(),
        rows: None,
    };
    (e, raw)
}

impl Store {
    /// Store the folder manifest over `files` (paths relative to the folder) and return the
    /// unit's entry. The same files always give the same id.
    pub fn put_folder(
        &self,
        files: &BTreeMap<String, TreeEntry>,
        kind: EntryKind,
    ) -> Result<TreeEntry> {
        let (e, raw) = unit_entry(
            &FolderManifest {
                files: files.clone(),
            },
            kind,
        );
        self.put_object(&raw)?;
        Ok(e)
    }

    /// The folder manifest with this id, or `None` when the object is something else (a file's
    /// manifest).
    pub fn read_folder(&self, id: &ManifestId) -> Result<Option<FolderManifest>> {
        let raw = self.get_object(&id.0)?;
        if !raw.starts_with(crate::objects::FOLDER_TAG) {
            return Ok(None);
        }
        FolderManifest::decode(&id.0, &raw).map(Some)
    }

    /// The units among `entries` under `rules`, stored: every folder holding a marker, unless
    /// it lies inside another unit (the outer folder is the unit).
    pub fn units_of(
        &self,
        entries: &BTreeMap<String, TreeEntry>,
        rules: &[UnitRule],
    ) -> Result<BTreeMap<String, TreeEntry>> {
        let mut dirs: Vec<(String, EntryKind)> = Vec::new();
        for path in entries.keys() {
            let Some((dir, name)) = path.rsplit_once('/') else {
                continue; // a marker at the top is not a folder of its own
            };
            if let Some(r) = rules.iter().find(|r| r.marker == name) {
                dirs.push((dir.to_string(), r.kind));
            }
        }
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: BTreeMap<String, TreeEntry> = BTreeMap::new();
        for (dir, kind) in dirs {
            if out.keys().any(|u| under(&dir, u)) {
                continue;
            }
            out.insert(
                dir.clone(),
                self.put_folder(&folder_files(entries, &dir), kind)?,
            );
        }
        Ok(out)
    }

    /// Hash a folder anywhere on disk as a unit of `kind`, storing nothing: the entry it would
    /// get. Files in the working tree cost a stat when unchanged (the stat cache).
    pub fn hash_folder(&self, dir: &Path, kind: EntryKind) -> Result<TreeEntry> {
        let mut files = BTreeMap::new();
        self.hash_dir(dir, "", &mut files)?;
        if files.is_empty() {
            return Err(StoreError::BadPath {
                path: dir.display().to_string(),
                reason: "the folder holds no file".into(),
            });
        }
        Ok(unit_entry(&FolderManifest { files }, kind).0)
    }

    fn hash_dir(&self, dir: &Path, rel: &str, out: &mut BTreeMap<String, TreeEntry>) -> Result<()> {
        let mut names: Vec<(String, std::fs::FileType)> = Vec::new();
        for e in std::fs::read_dir(dir).at(dir)? {
            let e = e.at(dir)?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with(".srlm") || name == ".git" {
                continue; // srlm's temporary files and stores are never part of a folder
            }
            names.push((name, e.file_type().at(e.path())?));
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ft) in names {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let abs = dir.join(&name);
            if ft.is_dir() {
                self.hash_dir(&abs, &child, out)?;
            } else if ft.is_file() {
                // a tree path when inside the working tree (the stat cache answers), else
                // the absolute path (hashed where it is)
                let key = match abs.strip_prefix(&self.workdir) {
                    Ok(r) => r.to_string_lossy().into_owned(),
                    Err(_) => abs.to_string_lossy().into_owned(),
                };
                out.insert(child, self.hash_file(&key)?);
            }
        }
        Ok(())
    }
}
