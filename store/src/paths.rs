//! Tree paths: relative, `/`-separated, normalised; never absolute, never `..`, never a `.srlm`
//! or `.git` component (at any depth, any case: a tree must not write into a store or a git
//! repository, e.g. `.git/hooks/post-checkout`), never a control character (a newline would
//! split the hooks' one-path-per-line lists), never through a symlink.
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, StoreError};

fn bad(path: &str, reason: &str) -> StoreError {
    StoreError::BadPath {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Check a path as stored in a tree.
pub fn check_tree_path(p: &str) -> Result<()> {
    if p.is_empty() {
        return Err(bad(p, "empty path"));
    }
    if p.starts_with('/') {
        return Err(bad(p, "absolute paths are not allowed in a tree"));
    }
    if p.contains('\\') {
        return Err(bad(p, "path contains a backslash"));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(bad(
            p,
            "path contains a control character (newline, tab, NUL, ...)",
        ));
    }
    for c in p.split('/') {
        match c {
            "" | "." => return Err(bad(p, "path is not normalised (empty or '.' component)")),
            ".." => return Err(bad(p, "'..' is not allowed in a path")),
            _ if c.eq_ignore_ascii_case(".srlm") => {
                return Err(bad(p, "a store's own directory (.srlm) cannot be tracked"))
            }
            _ if c.eq_ignore_ascii_case(".git") => {
                return Err(bad(p, "a git directory (.git) cannot be tracked"))
            }
            _ if is_temp_name(c) => {
                return Err(bad(
                    p,
                    "names starting with .srlm-tmp are srlm's temp files",
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// srlm's temp files in the working tree (`.srlm-tmp-*`, written beside a file being checked
/// out): never tracked, ignored at any depth.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(".srlm-tmp")
}

/// Turn a user-given path (relative to `cwd`, or absolute) into a tree path relative to
/// `workdir` (which must be canonical). Rejects paths outside the working directory, inside
/// `.srlm`, and paths that go through a symlink.
pub fn to_tree_path(workdir: &Path, cwd: &Path, user: &Path) -> Result<String> {
    let shown = user.display().to_string();
    let cwd = cwd.canonicalize().map_err(|e| StoreError::Io {
        path: cwd.into(),
        err: e,
    })?;
    let joined = if user.is_absolute() {
        user.to_path_buf()
    } else {
        cwd.join(user)
    };
    let mut norm = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                norm.pop();
            }
            Component::CurDir => {}
            other => norm.push(other),
        }
    }
    let rel = norm.strip_prefix(workdir).map_err(|_| {
        bad(
            &shown,
            &format!("outside the working directory {}", workdir.display()),
        )
    })?;
    let mut parts = Vec::new();
    let mut walk = workdir.to_path_buf();
    for c in rel.components() {
        let s = c
            .as_os_str()
            .to_str()
            .ok_or_else(|| bad(&shown, "path is not valid UTF-8"))?;
        walk.push(s);
        if let Ok(md) = std::fs::symlink_metadata(&walk) {
            if md.file_type().is_symlink() {
                return Err(bad(
                    &shown,
                    "symlinks are not supported (track the file itself)",
                ));
            }
        }
        parts.push(s.to_string());
    }
    if parts.is_empty() {
        return Ok(String::new()); // the working directory itself
    }
    let p = parts.join("/");
    check_tree_path(&p).map_err(|e| match e {
        StoreError::BadPath { reason, .. } => bad(&shown, &reason),
        other => other,
    })?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_paths() {
        assert!(check_tree_path("a/b.jsonl").is_ok());
        for p in [
            "",
            "/a",
            "a/../b",
            "a//b",
            "./a",
            ".srlm/x",
            "a\\b",
            ".git/hooks/post-checkout",
            "sub/.GIT/config",
            "sub/.srlm/FORMAT",
            "a\nb.jsonl",
            "a\0b",
            "d/.srlm-tmp-x",
        ] {
            assert!(check_tree_path(p).is_err(), "{p}");
        }
    }

    #[test]
    fn user_paths() {
        let d = tempfile::tempdir().unwrap();
        let wd = d.path().canonicalize().unwrap();
        std::fs::create_dir_all(wd.join("sub")).unwrap();
        std::fs::write(wd.join("sub/f.jsonl"), b"").unwrap();
        let sub = wd.join("sub");
        assert_eq!(
            to_tree_path(&wd, &sub, Path::new("f.jsonl")).unwrap(),
            "sub/f.jsonl"
        );
        assert_eq!(
            to_tree_path(&wd, &sub, Path::new("../sub/./f.jsonl")).unwrap(),
            "sub/f.jsonl"
        );
        assert!(to_tree_path(&wd, &sub, Path::new("../../x")).is_err());
        assert!(to_tree_path(&wd, &wd, Path::new("/etc/passwd")).is_err());
        assert!(to_tree_path(&wd, &wd, Path::new(".srlm/HEAD")).is_err());
        std::os::unix::fs::symlink(wd.join("sub/f.jsonl"), wd.join("link.jsonl")).unwrap();
        let e = to_tree_path(&wd, &wd, Path::new("link.jsonl")).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}
