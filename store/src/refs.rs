//! Refs: `HEAD`, branches (`refs/heads/NAME`) and tags (`refs/tags/NAME`), behind [`RefStore`]
//! (read, list, compare-and-swap update) so a remote's refs can implement it too.
//!
//! [`FileRefs`] keeps them as plain files under `.srlm/`, git's layout: `HEAD` holds
//! `ref: refs/heads/NAME` or a commit id, every other ref a commit id. An update writes a temp
//! file, fsyncs it and renames it over the old one (then fsyncs the directory), so a crash leaves
//! the old value or the new one, and refs never depend on the index: deleting `.srlm/index`
//! loses only derived data. Writers hold the store lock, which makes read-compare-write a real
//! compare-and-swap.
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, StoreError};

/// Where refs live, and how they change.
pub trait RefStore {
    /// The value of `name` (`HEAD`, `refs/heads/main`, `refs/tags/M1`), if it is set.
    fn read(&self, name: &str) -> Result<Option<String>>;
    /// The refs under `prefix` (e.g. `refs/tags/`), names without the prefix, sorted by name.
    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>>;
    /// Change `name` from `expected` to `new` (`None`: absent, or delete). Fails with
    /// [`StoreError::RefConflict`] when its value is not `expected`.
    fn update(&self, name: &str, expected: Option<&str>, new: Option<&str>) -> Result<()>;
}

/// Refs as files under a store directory.
pub struct FileRefs {
    dir: PathBuf,
    tmp: PathBuf,
}

impl FileRefs {
    /// Refs of the store directory `dir` (`.srlm`), temp files in `tmp` (same file system).
    pub fn new(dir: &Path, tmp: &Path) -> FileRefs {
        FileRefs {
            dir: dir.to_path_buf(),
            tmp: tmp.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        let ok = name == "HEAD"
            || name == "refs"
            || (name.starts_with("refs/")
                && name
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(".tmp"))
                && !name.chars().any(|c| c.is_control() || c == '\\'));
        if !ok {
            return Err(StoreError::BadRefName {
                kind: "ref",
                name: name.to_string(),
                reason: "not HEAD or a normal path under refs/",
            });
        }
        Ok(self.dir.join(name))
    }

    fn list_dir(&self, dir: &Path, name: &str, out: &mut Vec<(String, String)>) -> Result<()> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir.into(),
                    err: e,
                })
            }
        };
        for e in rd {
            let e = e.at(dir)?;
            let Ok(n) = e.file_name().into_string() else {
                continue; // not a name srlm writes
            };
            if n.starts_with('.') {
                continue;
            }
            let full = if name.is_empty() {
                n.clone()
            } else {
                format!("{name}/{n}")
            };
            let ft = e.file_type().at(e.path())?;
            if ft.is_dir() {
                self.list_dir(&e.path(), &full, out)?;
            } else if ft.is_file() {
                let v = std::fs::read_to_string(e.path()).at(e.path())?;
                out.push((full, v.trim().to_string()));
            }
        }
        Ok(())
    }
}

impl RefStore for FileRefs {
    fn read(&self, name: &str) -> Result<Option<String>> {
        let p = self.path(name)?;
        match std::fs::read_to_string(&p) {
            Ok(v) => Ok(Some(v.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // `refs/tags/a` read while `a` is a directory of tags `a/…`: no such ref
            Err(e) if p.is_dir() => {
                let _ = e;
                Ok(None)
            }
            Err(e) => Err(StoreError::Io { path: p, err: e }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let base = prefix.trim_end_matches('/');
        let mut out = Vec::new();
        self.list_dir(&self.path(base)?, "", &mut out)?;
        out.sort();
        Ok(out)
    }

    fn update(&self, name: &str, expected: Option<&str>, new: Option<&str>) -> Result<()> {
        let p = self.path(name)?;
        expect(name, expected, self.read(name)?)?;
        match new {
            Some(v) => {
                if let Some(parent) = p.parent() {
                    if let Err(err) = std::fs::create_dir_all(parent) {
                        return Err(conflict_or_io(name, parent, err));
                    }
                }
                if p.is_dir() {
                    return Err(StoreError::BadRefName {
                        kind: "ref",
                        name: name.to_string(),
                        reason: "refs with this name as a folder exist (e.g. NAME/x)",
                    });
                }
                crate::fsutil::write_atomic(&self.tmp, &p, format!("{v}\n").as_bytes())
            }
            None => {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::Io { path: p, err: e }),
                }
                crate::fsutil::sync_dir(p.parent().unwrap_or(&self.dir))?;
                // drop folders left empty (`refs/tags/a/` after deleting `a/b`), not `refs/*`
                let mut d = p.parent().map(Path::to_path_buf);
                while let Some(dir) = d {
                    if dir.parent() == Some(&self.dir.join("refs")) || dir == self.dir {
                        break;
                    }
                    if std::fs::remove_dir(&dir).is_err() {
                        break;
                    }
                    d = dir.parent().map(Path::to_path_buf);
                }
                Ok(())
            }
        }
    }
}

/// The compare of compare-and-swap: `cur` must be `expected`.
fn expect(name: &str, expected: Option<&str>, cur: Option<String>) -> Result<()> {
    if cur.as_deref() == expected {
        return Ok(());
    }
    Err(StoreError::RefConflict {
        name: name.to_string(),
        expected: expected.unwrap_or("(absent)").to_string(),
        found: cur.unwrap_or_else(|| "(absent)".into()),
    })
}

fn conflict_or_io(name: &str, parent: &Path, err: std::io::Error) -> StoreError {
    if parent.ancestors().any(|a| a.is_file()) {
        StoreError::BadRefName {
            kind: "ref",
            name: name.to_string(),
            reason: "a ref named like one of its folders exists",
        }
    } else {
        StoreError::Io {
            path: parent.to_path_buf(),
            err,
        }
    }
}

/// An in-memory [`RefStore`] for tests of code that only needs refs.
#[derive(Default)]
pub struct MemRefs {
    refs: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

impl RefStore for MemRefs {
    fn read(&self, name: &str) -> Result<Option<String>> {
        Ok(self.refs.lock().unwrap().get(name).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .refs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), v.clone())))
            .collect())
    }

    fn update(&self, name: &str, expected: Option<&str>, new: Option<&str>) -> Result<()> {
        let mut refs = self.refs.lock().unwrap();
        expect(name, expected, refs.get(name).cloned())?;
        match new {
            Some(v) => refs.insert(name.to_string(), v.to_string()),
            None => refs.remove(name),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(r: &dyn RefStore) {
        assert_eq!(r.read("refs/tags/M1").unwrap(), None);
        r.update("refs/tags/M1", None, Some("aa")).unwrap();
        r.update("refs/tags/AIFT(M1)", None, Some("bb")).unwrap();
        r.update("refs/heads/x/y", None, Some("cc")).unwrap();
        assert!(matches!(
            r.update("refs/tags/M1", None, Some("dd")),
            Err(StoreError::RefConflict { .. })
        ));
        r.update("refs/tags/M1", Some("aa"), Some("dd")).unwrap();
        assert_eq!(
            r.list("refs/tags/").unwrap(),
            vec![("AIFT(M1)".into(), "bb".into()), ("M1".into(), "dd".into())]
        );
        assert_eq!(
            r.list("refs/heads/").unwrap(),
            vec![("x/y".into(), "cc".into())]
        );
        r.update("refs/heads/x/y", Some("cc"), None).unwrap();
        assert!(r.list("refs/heads/").unwrap().is_empty());
    }

    #[test]
    fn file_and_memory_refs_behave_alike() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("tmp")).unwrap();
        let f = FileRefs::new(d.path(), &d.path().join("tmp"));
        exercise(&f);
        assert!(!d.path().join("refs/heads/x").exists(), "empty folder left");
        exercise(&MemRefs::default());
        assert!(f.update("refs/../../etc", None, Some("x")).is_err());
    }
}
