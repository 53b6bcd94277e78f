//! The staging area: the tree the next commit will hold, kept as one file (`.srlm/stage`, a
//! tree object's bytes) replaced atomically. A commit reads it once, so it commits a consistent
//! snapshot; a crash leaves the old staging area or the new one; losing the index loses none of
//! it.
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::{ObjectId, Tree};

pub(crate) struct StageFile {
    path: PathBuf,
    tmp: PathBuf,
}

impl StageFile {
    pub fn new(store_dir: &Path, tmp: &Path) -> StageFile {
        StageFile {
            path: store_dir.join("stage"),
            tmp: tmp.to_path_buf(),
        }
    }

    /// The staged tree (empty when nothing was ever staged).
    pub fn load(&self) -> Result<Tree> {
        match std::fs::read(&self.path) {
            Ok(raw) => Tree::decode(&ObjectId::of(&raw), &raw).map_err(|e| StoreError::BadPath {
                path: self.path.display().to_string(),
                reason: format!(
                    "the staging area is unreadable ({e}); checking out HEAD rewrites it"
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tree::default()),
            Err(err) => Err(StoreError::Io {
                path: self.path.clone(),
                err,
            }),
        }
    }

    pub fn save(&self, tree: &Tree) -> Result<()> {
        crate::fsutil::write_atomic(&self.tmp, &self.path, &tree.encode())
    }
}
