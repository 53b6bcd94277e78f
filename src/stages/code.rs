//! The recorded code of an external run (`srlm run`), put back for its replay.
//!
//! A run recorded in a git repository names its commit and, when the tree was dirty, the
//! uncommitted diff (stored as an object). Its replay runs in a temporary checkout of that
//! commit (git2, into the replay's scratch folder; the user's repository, index and HEAD are
//! left alone) with the recorded patch applied, not in today's working directory. Without a
//! recorded commit (no git repository), today's copies of the files the command line named are
//! used. Either way every such file (the user's scripts) is hashed again and compared with the
//! BLAKE3 the run recorded, so a script changed since the run is named.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use srlm_store::Store;

use crate::provenance::{CodeVersion, RunRecord};

/// Why the code could not be put back (the run is then refused with this reason).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodeRefused(pub String);

/// A file the command line named (a script), as recorded, as it is today and as replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCheck {
    /// Relative to the run's directory, as on the command line.
    pub path: String,
    /// BLAKE3 (hex) recorded with the run.
    pub recorded: String,
    /// BLAKE3 of today's file in the working directory (None: gone).
    pub now: Option<String>,
    /// BLAKE3 of the file the replay ran with (None: it had none).
    pub replayed: Option<String>,
}

impl ScriptCheck {
    /// Changed (or gone) in the working directory since the run.
    pub fn changed_since(&self) -> bool {
        self.now.as_deref() != Some(self.recorded.as_str())
    }
    /// The replay did not run the recorded version.
    pub fn replayed_other(&self) -> bool {
        self.replayed.as_deref() != Some(self.recorded.as_str())
    }
}

/// The code a replay runs with.
#[derive(Debug, Clone)]
pub struct CodeReplay {
    /// Where the store's working directory maps in the replay (its relative paths are placed
    /// under it).
    pub dir: PathBuf,
    /// What the code is, for the report: `git commit abc… + recorded patch`, or today's files.
    pub source: String,
    pub scripts: Vec<ScriptCheck>,
}

fn blake3_of(p: &Path) -> Option<String> {
    std::fs::read(p)
        .ok()
        .map(|b| blake3::hash(&b).to_hex().to_string())
}

/// Put back the code of external run `record` under `scratch`, for a replay in the store of
/// working directory `workdir`.
pub fn prepare(
    store: &Store,
    record: &RunRecord,
    workdir: &Path,
    scratch: &Path,
) -> Result<CodeReplay, CodeRefused> {
    let files: BTreeMap<String, String> =
        serde_json::from_value(record.params["files"].clone()).unwrap_or_default();
    let cwd = record.params["cwd"].as_str().unwrap_or(".");
    let sub = |base: &Path| {
        if cwd == "." {
            base.to_path_buf()
        } else {
            base.join(cwd)
        }
    };
    let checkout = record
        .code
        .as_ref()
        .filter(|c| c.commit.is_some())
        .map(|c| checkout(store, c, workdir, &scratch.join("code")))
        .transpose()?;
    let (dir, source) = match checkout {
        Some((dir, source)) => (dir, source),
        None => (
            scratch.join("work"),
            "today's files in the working directory (no git commit recorded)".to_string(),
        ),
    };
    let (src_dir, run_dir) = (sub(workdir), sub(&dir));
    let mut scripts = Vec::new();
    for (rel, recorded) in &files {
        let now = blake3_of(&src_dir.join(rel));
        let dst = run_dir.join(rel);
        if !dst.is_file() {
            // not in the recorded code (no commit, or a file git ignores): today's copy, if any
            let src = src_dir.join(rel);
            if !src.is_file() {
                return Err(CodeRefused(format!(
                    "{rel}, named on the command line, no longer exists in {} and is not in the recorded code",
                    src_dir.display()
                )));
            }
            let copied = dst
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::copy(&src, &dst));
            if let Err(e) = copied {
                return Err(CodeRefused(format!("copying {rel}: {e}")));
            }
        }
        scripts.push(ScriptCheck {
            path: rel.clone(),
            recorded: recorded.clone(),
            now,
            replayed: blake3_of(&dst),
        });
    }
    Ok(CodeReplay {
        dir,
        source,
        scripts,
    })
}

/// Check out commit `code.commit` of repository `code.repo` into `dest` with the recorded patch
/// applied; returns where `workdir` maps in it, and a description.
fn checkout(
    store: &Store,
    code: &CodeVersion,
    workdir: &Path,
    dest: &Path,
) -> Result<(PathBuf, String), CodeRefused> {
    let sha = code.commit.as_deref().unwrap_or_default();
    let refuse = |what: &str, e: &dyn std::fmt::Display| {
        CodeRefused(format!(
            "the recorded code (git commit {sha} in {}): {what}: {e}",
            code.repo
        ))
    };
    let repo = git2::Repository::open(&code.repo).map_err(|e| refuse("no repository", &e))?;
    let oid = git2::Oid::from_str(sha).map_err(|e| refuse("bad commit id", &e))?;
    let commit = repo
        .find_commit(oid)
        .map_err(|e| refuse("the commit is not in the repository", &e))?;
    let tree = commit.tree().map_err(|e| refuse("reading its tree", &e))?;
    std::fs::create_dir_all(dest).map_err(|e| refuse("making the checkout folder", &e))?;
    let mut cb = git2::build::CheckoutBuilder::new();
    cb.target_dir(dest).force().update_index(false);
    let short = &sha[..12.min(sha.len())];
    let mut source = format!("git commit {short}");
    // large untracked files were only named in the patch, not copied
    let patch: Option<Vec<u8>> = match code.patch {
        Some(id) => {
            let bytes = store
                .get_object(&id)
                .map_err(|e| refuse("the recorded patch", &e))?;
            let text: Vec<&[u8]> = bytes
                .split_inclusive(|b| *b == b'\n')
                .filter(|l| !l.starts_with(b"# untracked "))
                .collect();
            Some(text.concat()).filter(|t| !t.iter().all(u8::is_ascii_whitespace))
        }
        None => None,
    };
    match patch {
        Some(text) => {
            let diff = git2::Diff::from_buffer(&text)
                .map_err(|e| refuse("the recorded patch does not parse", &e))?;
            let mut index = repo
                .apply_to_tree(&tree, &diff, None)
                .map_err(|e| refuse("the recorded patch does not apply", &e))?;
            repo.checkout_index(Some(&mut index), Some(&mut cb))
                .map_err(|e| refuse("checking it out", &e))?;
            source.push_str(" + the recorded patch");
        }
        None => repo
            .checkout_tree(tree.as_object(), Some(&mut cb))
            .map_err(|e| refuse("checking it out", &e))?,
    }
    let repo_root = Path::new(&code.repo);
    let wd = workdir
        .canonicalize()
        .unwrap_or_else(|_| workdir.to_path_buf());
    let rel = wd.strip_prefix(repo_root).map_err(|_| {
        refuse(
            "the store's working directory is not inside it",
            &wd.display(),
        )
    })?;
    Ok((dest.join(rel), source))
}
