//! Files outside the working directory (a model in a cache, a dataset on a shared disk), as an
//! application's inputs: hashed exactly as `add` hashes a tracked file (same kind, same id),
//! through the stat cache under their absolute path, so an unchanged 14 GB file costs a stat;
//! their pieces are stored only when asked ([`Store::store_external`]). They are never staged.
use std::path::Path;
use std::time::SystemTime;

use crate::error::{IoContext, Result, StoreError};
use crate::index::{StatEntry, StatKey};
use crate::ingest::{NullSink, PackSink};
use crate::pack::PackWriter;
use crate::store::AddProgress;
use crate::{EntryKind, ManifestId, ObjectId, Store, TreeEntry};

/// An outside file's entry, and whether the stat cache gave it (nothing was read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFile {
    pub entry: TreeEntry,
    pub cached: bool,
}

impl Store {
    /// Hash the regular file at absolute path `abs` (outside the working directory; links are
    /// followed) without storing it. An unchanged file (same size, mtime, ctime, inode as when last hashed) is a
    /// stat; `progress` hears of a file that is really read. A store opened for reading hashes
    /// without remembering.
    pub fn hash_external(
        &self,
        abs: &Path,
        progress: &mut dyn FnMut(AddProgress),
    ) -> Result<ExternalFile> {
        self.external(abs, false, progress)
    }

    /// [`Store::hash_external`], and store the file's pieces and manifest (as `add` would, but
    /// not staged): the object can then be read back even after the file changed. A caller
    /// keeps it reachable by naming it (e.g. as a run's input).
    pub fn store_external(
        &self,
        abs: &Path,
        progress: &mut dyn FnMut(AddProgress),
    ) -> Result<ExternalFile> {
        self.writable("storing a file")?;
        self.external(abs, true, progress)
    }

    fn external(
        &self,
        abs: &Path,
        store: bool,
        progress: &mut dyn FnMut(AddProgress),
    ) -> Result<ExternalFile> {
        external_key(abs)?;
        // an outside file is the user's, often a link (a Hugging Face cache's snapshot names
        // its blobs by links): read what it points to, and remember that
        let real = std::fs::canonicalize(abs).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => StoreError::Missing(abs.to_path_buf()),
            _ => StoreError::Io {
                path: abs.to_path_buf(),
                err,
            },
        })?;
        let abs = real.as_path();
        let key_path = external_key(abs)?;
        let (file, md) = crate::wtfs::open_regular(abs)?;
        let key = StatKey::of(&md);
        let ix = self.index_if_available();
        if let Some(se) = ix.map(|ix| ix.stat_get(&key_path)).transpose()?.flatten() {
            let have = !store || self.has_object(&se.entry.id.0)?;
            if !se.racy && se.stat == key && have {
                return Ok(ExternalFile {
                    entry: se.entry,
                    cached: true,
                });
            }
        }
        progress(AddProgress::File {
            path: &key_path,
            size: md.len(),
        });
        let before = SystemTime::now();
        let kind = EntryKind::for_path(&key_path);
        let entry = if store {
            let mut writer = PackWriter::new(&self.tmp_dir())?;
            let m = {
                let mut packs = self.odb.packs();
                let mut sink = PackSink::new(&mut writer, &mut packs);
                crate::worktree::ingest(abs, file, kind, &mut sink)?
            };
            // pieces are durable before the manifest naming them
            if writer
                .finish(&self.dir.join("packs"), &self.tmp_dir())?
                .is_some()
            {
                self.odb.packs().reload();
            }
            let id = ManifestId(self.put_object(&m.encode())?);
            crate::worktree::entry_of(&m, kind, id)
        } else {
            let m = crate::worktree::ingest(abs, file, kind, &mut NullSink)?;
            crate::worktree::entry_of(&m, kind, ManifestId(ObjectId::of(&m.encode())))
        };
        let after = StatKey::of(&std::fs::symlink_metadata(abs).at(abs)?);
        let racy = after != key || crate::worktree::is_racy(&md, before);
        if let (Some(ix), true) = (ix, self.mode == crate::LockMode::Write) {
            ix.stat_put(
                &key_path,
                &StatEntry {
                    stat: key,
                    racy,
                    entry: entry.clone(),
                },
            )?;
            self.flush()?;
        }
        Ok(ExternalFile {
            entry,
            cached: false,
        })
    }
}

/// The stat cache's key of an outside file: its absolute path, which no tree path can be (tree
/// paths are relative), so the two never collide.
fn external_key(abs: &Path) -> Result<String> {
    if !abs.is_absolute() {
        return Err(StoreError::BadPath {
            path: abs.display().to_string(),
            reason: "an outside file is named by its absolute path".into(),
        });
    }
    abs.to_str().map(str::to_string).ok_or(StoreError::BadPath {
        path: abs.display().to_string(),
        reason: "the path is not valid UTF-8".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn an_outside_file_is_hashed_once_and_as_add_would() {
        let t = tempfile::tempdir().unwrap();
        let wd = t.path().join("wd");
        std::fs::create_dir_all(&wd).unwrap();
        let outside = t.path().join("m.bin");
        std::fs::write(&outside, vec![7u8; 300_000]).unwrap();
        // an old mtime, so the first hash is trusted (not racy)
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&outside)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let mut s = Store::init(&wd).unwrap();
        let mut heard = Vec::new();
        let a = s
            .hash_external(&outside, &mut |p| {
                let AddProgress::File { path, .. } = p;
                heard.push(path.to_string())
            })
            .unwrap();
        assert!(!a.cached);
        assert_eq!(heard, [outside.display().to_string()]);
        let b = s.hash_external(&outside, &mut |_| panic!("read")).unwrap();
        assert!(b.cached, "an unchanged file is a stat");
        assert_eq!(a.entry, b.entry);
        assert!(!s.has_object(&a.entry.id.0).unwrap(), "not stored");

        // the same bytes in the working tree get the same id
        std::fs::copy(&outside, wd.join("m.bin")).unwrap();
        s.add(&wd, &[PathBuf::from("m.bin")]).unwrap();
        assert_eq!(s.staged().unwrap().entries["m.bin"].id, a.entry.id);

        // changed: hashed again, a new id; stored on request, and readable back
        std::fs::write(&outside, vec![8u8; 300_000]).unwrap();
        let c = s.store_external(&outside, &mut |_| {}).unwrap();
        assert!(!c.cached);
        assert_ne!(c.entry.id, a.entry.id);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut s.open_entry(&c.entry).unwrap(), &mut back).unwrap();
        assert_eq!(back, vec![8u8; 300_000]);
        assert!(s.staged().unwrap().entries.len() == 1, "never staged");

        // through a link: the same id as the file it points to
        let link = t.path().join("link.bin");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert_eq!(s.hash_external(&link, &mut |_| {}).unwrap().entry, c.entry);
        std::fs::remove_file(&outside).unwrap();
        assert!(matches!(
            s.hash_external(&outside, &mut |_| {}),
            Err(StoreError::Missing(_))
        ));
        assert!(s
            .hash_external(Path::new("rel/m.bin"), &mut |_| {})
            .is_err());
    }
}
