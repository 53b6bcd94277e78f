//! Working-tree file access that cannot be redirected. Writes and deletes open each folder of a
//! tree path from the working directory down by directory handle (`openat` with `O_NOFOLLOW |
//! O_DIRECTORY`), so a folder replaced by a symlink (`sub -> ../outside`) makes the operation
//! fail instead of reaching outside; the final name is created, renamed and unlinked relative to
//! that handle, never by re-resolving a string path. Reads open with `O_NOFOLLOW | O_NONBLOCK`
//! and check the opened file is regular, so a FIFO or device at a tracked path is never waited
//! on or read.
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::error::{Result, StoreError};

fn io_at(path: PathBuf) -> impl FnOnce(rustix::io::Errno) -> StoreError {
    move |e| StoreError::Io {
        path,
        err: e.into(),
    }
}

fn kind_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Symlink => "symlink",
        FileType::Directory => "directory",
        _ => "special file",
    }
}

/// The folder holding tree path `tp`, opened component by component; `create` makes missing
/// folders. Returns the handle and the final name.
fn open_parent(workdir: &Path, tp: &str, create: bool) -> Result<Option<(OwnedFd, String)>> {
    let mut parts: Vec<&str> = tp.split('/').collect();
    let name = parts.pop().expect("split yields one part").to_string();
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(workdir, dir_flags, Mode::empty())
        .map_err(io_at(workdir.to_path_buf()))?;
    let mut walked = workdir.to_path_buf();
    for c in parts {
        walked.push(c);
        let next = match rustix::fs::openat(&fd, c, dir_flags, Mode::empty()) {
            Ok(f) => f,
            Err(rustix::io::Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&fd, c, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io_at(walked)(e)),
                }
                rustix::fs::openat(&fd, c, dir_flags, Mode::empty())
                    .map_err(io_at(walked.clone()))?
            }
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                return Err(StoreError::BadPath {
                    path: tp.to_string(),
                    reason: format!(
                        "{} is a symlink or not a folder; srlm never writes through one",
                        walked.display()
                    ),
                })
            }
            Err(e) => return Err(io_at(walked)(e)),
        };
        fd = next;
    }
    Ok(Some((fd, name)))
}

/// Write `tp` from `fill` (which writes the bytes): into a temp file beside it, then renamed
/// over it. Returns the new file's metadata (for the stat cache).
pub(crate) fn write_file(
    workdir: &Path,
    tp: &str,
    fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<std::fs::Metadata> {
    let abs = workdir.join(tp);
    let (dir, name) = open_parent(workdir, tp, true)?.expect("created");
    // Replacing a folder or special file by a file is refused (the caller checks for changes).
    match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let ft = FileType::from_raw_mode(st.st_mode);
            if ft != FileType::RegularFile && ft != FileType::Symlink {
                return Err(StoreError::NotRegular {
                    path: abs,
                    what: kind_name(ft),
                });
            }
        }
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(io_at(abs)(e)),
    }
    let tmp_name = format!(".srlm-tmp-{}-{}", std::process::id(), unique());
    let fd = rustix::fs::openat(
        &dir,
        tmp_name.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o666),
    )
    .map_err(io_at(abs.clone()))?;
    let mut file = File::from(fd);
    let written = (|| {
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut file);
            fill(&mut w)?;
            w.flush().map_err(|err| StoreError::Io {
                path: abs.clone(),
                err,
            })?;
        }
        rustix::fs::renameat(&dir, tmp_name.as_str(), &dir, name.as_str())
            .map_err(io_at(abs.clone()))
    })();
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(&dir, tmp_name.as_str(), AtFlags::empty());
        return Err(e);
    }
    file.metadata()
        .map_err(|err| StoreError::Io { path: abs, err })
}

/// Remove tracked file `tp` (a file, or a symlink itself: never what it points at). Returns
/// whether something was removed; a folder in its place is left alone.
pub(crate) fn remove_file(workdir: &Path, tp: &str) -> Result<bool> {
    let abs = workdir.join(tp);
    let Some((dir, name)) = open_parent(workdir, tp, false)? else {
        return Ok(false);
    };
    match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Ok(false),
        Ok(_) => {
            rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()).map_err(io_at(abs))?;
            Ok(true)
        }
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(io_at(abs)(e)),
    }
}

/// Remove the folders of `tp` that are empty now (after its file was removed), deepest first,
/// each by handle: a folder that is not empty, or not a folder, ends it.
pub(crate) fn remove_empty_parents(workdir: &Path, tp: &str) {
    let mut cur = tp;
    while let Some((parent, _)) = cur.rsplit_once('/') {
        let Ok(Some((dir, name))) = open_parent(workdir, parent, false) else {
            return;
        };
        if rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::REMOVEDIR).is_err() {
            return;
        }
        cur = parent;
    }
}

/// Remove srlm's temp files (`.srlm-tmp-*`) left in the folder of `tp` by a killed checkout.
pub(crate) fn remove_temp_leftovers(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            if n.to_str().map(crate::paths::is_temp_name).unwrap_or(false)
                && e.file_type().map(|t| t.is_file()).unwrap_or(false)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Open a working-tree file for reading: never through a final symlink, never blocking on a
/// FIFO, and only if it is a regular file.
pub(crate) fn open_regular(abs: &Path) -> Result<(File, std::fs::Metadata)> {
    let fd = rustix::fs::open(
        abs,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        rustix::io::Errno::NOENT => StoreError::Missing(abs.to_path_buf()),
        rustix::io::Errno::LOOP => StoreError::NotRegular {
            path: abs.to_path_buf(),
            what: "symlink",
        },
        e => StoreError::Io {
            path: abs.to_path_buf(),
            err: e.into(),
        },
    })?;
    let f = File::from(fd);
    let md = f.metadata().map_err(|err| StoreError::Io {
        path: abs.to_path_buf(),
        err,
    })?;
    if !md.is_file() {
        let st = rustix::fs::fstat(&f).map_err(io_at(abs.to_path_buf()))?;
        return Err(StoreError::NotRegular {
            path: abs.to_path_buf(),
            what: kind_name(FileType::from_raw_mode(st.st_mode)),
        });
    }
    Ok((f, md))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (t << 16) ^ N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_deletes_never_follow_a_symlinked_folder() {
        let d = tempfile::tempdir().unwrap();
        let (wd, outside) = (d.path().join("wd"), d.path().join("outside"));
        std::fs::create_dir_all(&wd).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("x.jsonl"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, wd.join("sub")).unwrap();
        let e = remove_file(&wd, "sub/x.jsonl").unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        let e = write_file(&wd, "sub/new.jsonl", &mut |w| {
            w.write_all(b"x").unwrap();
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(std::fs::read(outside.join("x.jsonl")).unwrap(), b"keep");
        assert!(!outside.join("new.jsonl").exists());
        // a normal nested write works and leaves no temp file
        write_file(&wd, "a/b/c.jsonl", &mut |w| {
            w.write_all(b"{}\n").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::read(wd.join("a/b/c.jsonl")).unwrap(), b"{}\n");
        assert_eq!(std::fs::read_dir(wd.join("a/b")).unwrap().count(), 1);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.jsonl");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let e = open_regular(&p).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
    }
}
