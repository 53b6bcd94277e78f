//! The object database, behind [`ObjectDb`] so that a remote can serve the same calls: small
//! objects (commits, trees, manifests, run records, opaque JSON) by id, and pieces (dataset rows,
//! checkpoint chunks) by id. [`LocalOdb`] keeps small objects loose (`objects/ab/cdef…`) and
//! pieces in packs (`packs/`). Every read is verified against its id.
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::pack::Packs;
use crate::ObjectId;

/// Objects and pieces by id.
pub trait ObjectDb {
    /// Store a small object; returns its id (storing what is present is a no-op).
    fn put_object(&self, bytes: &[u8]) -> Result<ObjectId>;
    /// A small object's bytes, verified; `None` when absent.
    fn get_object(&self, id: &ObjectId) -> Result<Option<Vec<u8>>>;
    /// Whether a small object is present (not verified).
    fn has_object(&self, id: &ObjectId) -> Result<bool>;
    /// The ids of every small object (unordered).
    fn list_objects(&self) -> Result<Vec<ObjectId>>;
    /// A piece's bytes, verified; `None` when absent.
    fn get_piece(&self, id: &ObjectId) -> Result<Option<Vec<u8>>>;
    /// Whether a piece is present.
    fn has_piece(&self, id: &ObjectId) -> Result<bool>;
}

/// Loose objects and packs in a store directory.
pub struct LocalOdb {
    objects: PathBuf,
    tmp: PathBuf,
    packs: Mutex<Packs>,
}

impl LocalOdb {
    pub(crate) fn new(store_dir: &Path) -> LocalOdb {
        LocalOdb {
            objects: store_dir.join("objects"),
            tmp: store_dir.join("tmp"),
            packs: Mutex::new(Packs::new(store_dir.join("packs"))),
        }
    }

    pub(crate) fn objects_dir(&self) -> &Path {
        &self.objects
    }

    pub(crate) fn packs(&self) -> MutexGuard<'_, Packs> {
        self.packs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loose object ids starting with a lower-case hex prefix (2+ characters).
    pub(crate) fn with_prefix(&self, prefix: &str) -> Result<Vec<ObjectId>> {
        crate::loose::with_prefix(&self.objects, prefix)
    }
}

impl ObjectDb for LocalOdb {
    fn put_object(&self, bytes: &[u8]) -> Result<ObjectId> {
        crate::loose::put(&self.objects, &self.tmp, bytes)
    }

    fn get_object(&self, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        crate::loose::get(&self.objects, id)
    }

    fn has_object(&self, id: &ObjectId) -> Result<bool> {
        Ok(crate::loose::path_of(&self.objects, id).exists())
    }

    fn list_objects(&self) -> Result<Vec<ObjectId>> {
        crate::loose::list(&self.objects)
    }

    fn get_piece(&self, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        self.packs().read(id)
    }

    fn has_piece(&self, id: &ObjectId) -> Result<bool> {
        self.packs().contains(id)
    }
}
