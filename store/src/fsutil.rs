//! Durable file writes: a temp file inside the store, fsync, rename, fsync of the directory.
use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Write `dest` atomically: the bytes go to a temp file in `tmp_dir` (same file system), which is
/// fsynced and renamed over `dest`; then `dest`'s directory is fsynced so the rename survives a
/// crash. A reader sees the old file or the new one, never a part.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir).at(tmp_dir)?;
    tmp.write_all(bytes).at(tmp.path().to_path_buf())?;
    tmp.as_file().sync_all().at(tmp.path().to_path_buf())?;
    persist(tmp, dest)
}

/// Rename a finished temp file to `dest` and fsync `dest`'s directory.
pub(crate) fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    tmp.persist(dest).map_err(|e| e.error).at(dest)?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// fsync a directory (makes renames and creations in it durable).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
