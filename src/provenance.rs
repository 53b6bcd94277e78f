//! Provenance: the run record (`srlm.run/v1`), its canonical bytes, the user's code version
//! (captured with git2 from the git repository enclosing the working directory) and the
//! environment a stage ran in.
//!
//! A run record says what a stage consumed and produced, shaped like an in-toto/SLSA provenance
//! statement: stage name and version, inputs by role and object id, every parameter, the engine's
//! choices, the code version (HEAD, branch, dirty flag and the uncommitted diff as a stored
//! object, so a dirty tree never looks clean), the environment, outputs by id, metrics, start
//! and end time and status. It is stored with [`srlm_store::Store::put_run`] as canonical JSON
//! (keys sorted, no whitespace), so the same record always has the same id.
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use srlm_store::{canonical_json, CommitId, EntryKind, ObjectId, RunId, Store};

/// The record type tag, first field of every run record.
pub const RUN_TYPE: &str = "srlm.run/v1";

/// Untracked files larger than this are named (with size and BLAKE3) in the code patch instead
/// of copied into it: a 540 MB checkpoint the user forgot to ignore must not become a patch.
const MAX_PATCH_FILE: u64 = 4 << 20;

/// Errors while capturing or reading provenance.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("git repository at {path}: {err}")]
    Git { path: PathBuf, err: git2::Error },
    #[error("reading {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
    #[error("run record {id}: {reason}")]
    BadRecord { id: String, reason: String },
}

/// One object a run consumed or produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object id (hex in JSON, typed in Rust).
    pub id: ObjectId,
    /// `dataset`, `checkpoint` or `file`, as in the store's tree entries.
    pub kind: EntryKind,
    /// Path relative to the store's working directory where the object lived (inputs: where it
    /// was read; outputs: where it was written). Replays put it at the same place. For an
    /// external input, its absolute path (as `external_path`).
    pub path: String,
    /// Inputs: where the object was resolved from (a commit, or the working tree). Absent on
    /// outputs and in records written before sources were recorded (lineage then matches the
    /// producer by content id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<InputSource>,
    /// Set for an input outside the working directory (a model in a cache, a dataset on a
    /// shared disk): its absolute path. It is recorded by id and read in place, not copied
    /// into the store unless the run asked for that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_path: Option<String>,
}

/// Where a run's input came from: what lineage follows to the run that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum InputSource {
    /// Resolved from a committed revision (`M1:model`, `AIFT(M1):aift.jsonl`, `HEAD:…`): the
    /// commit, and that commit's run when it has one.
    Commit {
        commit: CommitId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<RunId>,
    },
    /// Read from the working tree (hashed when the stage started).
    WorkingTree,
}

impl ObjectRef {
    /// An object with no recorded source (an output, or a start of a walk).
    pub fn new(id: ObjectId, kind: EntryKind, path: impl Into<String>) -> Self {
        ObjectRef {
            id,
            kind,
            path: path.into(),
            source: None,
            external_path: None,
        }
    }
}

/// Stage identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageInfo {
    pub name: String,
    pub version: String,
}

/// The user's code version (from the git repository enclosing the working directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeVersion {
    /// The repository's working directory.
    pub repo: String,
    /// The repository's remote URL (`origin`, else the first remote), without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// HEAD commit (absent in a repository without commits).
    pub commit: Option<String>,
    /// Branch name, absent when HEAD is detached.
    pub branch: Option<String>,
    /// Uncommitted changes (tracked or untracked, not ignored), outside srlm's own data.
    pub dirty: bool,
    /// The uncommitted diff (`git diff HEAD` plus untracked files), stored as an object.
    pub patch: Option<ObjectId>,
}

/// Where the stage ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvInfo {
    pub srlm: String,
    pub os: String,
    pub arch: String,
    pub cpu: String,
    pub threads: usize,
}

impl EnvInfo {
    /// The current process's environment.
    pub fn current() -> Self {
        EnvInfo {
            srlm: env!("CARGO_PKG_VERSION").to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            cpu: cpu_model(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// `ok` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Ok,
    Failed,
}

/// A run record, `srlm.run/v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(rename = "_type")]
    pub type_: String,
    pub stage: StageInfo,
    /// Which replay function reproduces this run (see `stages::reproduce`); defaults to the
    /// stage name. `srlm run` records `external`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<String>,
    pub inputs: BTreeMap<String, ObjectRef>,
    pub params: Value,
    pub engine: Value,
    pub code: Option<CodeVersion>,
    pub env: EnvInfo,
    pub outputs: BTreeMap<String, ObjectRef>,
    pub metrics: BTreeMap<String, Value>,
    pub started: String,
    pub finished: String,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RunRecord {
    /// A record of a run starting now: `ok` until told otherwise, no outputs or metrics yet.
    pub fn start(
        stage: StageInfo,
        inputs: BTreeMap<String, ObjectRef>,
        params: Value,
        engine: Value,
        code: Option<CodeVersion>,
    ) -> Self {
        let now = now_rfc3339();
        RunRecord {
            type_: RUN_TYPE.to_string(),
            stage,
            replay: None,
            inputs,
            params,
            engine,
            code,
            env: EnvInfo::current(),
            outputs: BTreeMap::new(),
            metrics: BTreeMap::new(),
            started: now.clone(),
            finished: now,
            status: RunStatus::Ok,
            error: None,
        }
    }

    /// The key that identifies "the same run": stage name and version, input ids by role and
    /// parameters. A committed run with the same key need not run again.
    pub fn key(&self) -> RunKey {
        RunKey::new(
            &self.stage,
            self.inputs.iter().map(|(r, o)| (r.as_str(), o.id)),
            &self.params,
        )
    }

    /// The replay function's name.
    pub fn replay_name(&self) -> &str {
        self.replay.as_deref().unwrap_or(&self.stage.name)
    }

    /// Canonical bytes: JSON with sorted keys and no whitespace.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical_json(&serde_json::to_value(self).expect("a run record always serialises"))
    }

    /// Store the record: canonical bytes through `put_run`, so the reverse lineage index knows
    /// its inputs and outputs.
    pub fn store(&self, store: &Store) -> Result<RunId, ProvenanceError> {
        let inputs: Vec<ObjectId> = self.inputs.values().map(|o| o.id).collect();
        let outputs: Vec<ObjectId> = self.outputs.values().map(|o| o.id).collect();
        Ok(store.put_run(&self.canonical_bytes(), &inputs, &outputs)?)
    }

    /// Load and parse a stored record.
    pub fn load(store: &Store, id: RunId) -> Result<RunRecord, ProvenanceError> {
        let bytes = store.get_run(&id)?.record;
        let rec: RunRecord =
            serde_json::from_slice(&bytes).map_err(|e| ProvenanceError::BadRecord {
                id: id.to_string(),
                reason: e.to_string(),
            })?;
        if rec.type_ != RUN_TYPE {
            return Err(ProvenanceError::BadRecord {
                id: id.to_string(),
                reason: format!(
                    "unknown record type {:?} (this srlm reads {RUN_TYPE})",
                    rec.type_
                ),
            });
        }
        Ok(rec)
    }
}

/// Identity of a run for "has this already run?": BLAKE3 of the canonical stage, inputs, params.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunKey([u8; 32]);

impl RunKey {
    pub fn new<'a>(
        stage: &StageInfo,
        inputs: impl IntoIterator<Item = (&'a str, ObjectId)>,
        params: &Value,
    ) -> Self {
        let inputs: serde_json::Map<String, Value> = inputs
            .into_iter()
            .map(|(r, id)| (r.to_string(), Value::String(id.to_string())))
            .collect();
        let v = serde_json::json!({
            "stage": stage.name, "version": stage.version, "inputs": inputs, "params": params,
        });
        RunKey(*blake3::hash(&canonical_json(&v)).as_bytes())
    }

    /// The key in hex (names a run's journal of finished rows).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// RFC 3339 UTC timestamp of now, to the millisecond.
pub fn now_rfc3339() -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_else(|_| "unknown".to_string())
}

/// [`capture_code`], with the uncommitted diff stored in `store` as an object.
pub fn record_code(
    store: &Store,
    dir: &Path,
    exclude: &HashSet<PathBuf>,
) -> Result<Option<CodeVersion>, ProvenanceError> {
    let Some(mut c) = capture_code(dir, exclude)? else {
        return Ok(None);
    };
    if let Some(patch) = c.patch.take() {
        c.version.patch = Some(store.put_object(&patch)?);
    }
    Ok(Some(c.version))
}

/// The code version and the uncommitted diff's bytes (which the caller stores as an object).
#[derive(Debug, Clone)]
pub struct CodeCapture {
    pub version: CodeVersion,
    pub patch: Option<Vec<u8>>,
}

/// Capture the code version of the git repository enclosing `dir`, or `None` outside any git
/// repository. Paths in `exclude` (absolute, or directories containing paths) are srlm's own
/// data (the `.srlm` store, tracked datasets and checkpoints, a stage's outputs): they are
/// recorded by object id already, so they neither make the tree dirty nor enter the patch.
pub fn capture_code(
    dir: &Path,
    exclude: &HashSet<PathBuf>,
) -> Result<Option<CodeCapture>, ProvenanceError> {
    let repo = match git2::Repository::discover(dir) {
        Ok(r) => r,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => {
            return Err(ProvenanceError::Git {
                path: dir.to_path_buf(),
                err: e,
            })
        }
    };
    let git_err = |e| ProvenanceError::Git {
        path: dir.to_path_buf(),
        err: e,
    };
    let Some(workdir) = repo.workdir().map(Path::to_path_buf) else {
        return Ok(None); // a bare repository has no working tree to version
    };
    let workdir = workdir.canonicalize().unwrap_or(workdir);
    let (commit, branch, head_tree) = match repo.head() {
        Ok(head) => {
            let c = head.peel_to_commit().map_err(git_err)?;
            let branch = if head.is_branch() {
                head.shorthand().map(str::to_string)
            } else {
                None
            };
            (
                Some(c.id().to_string()),
                branch,
                Some(c.tree().map_err(git_err)?),
            )
        }
        // an unborn branch: everything in the tree is uncommitted
        Err(e) if e.code() == git2::ErrorCode::UnbornBranch => (None, unborn_branch(&repo), None),
        Err(e) => return Err(git_err(e)),
    };
    let mut opts = git2::DiffOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .show_untracked_content(true)
        .ignore_submodules(false);
    let diff = repo
        .diff_tree_to_workdir_with_index(head_tree.as_ref(), Some(&mut opts))
        .map_err(git_err)?;
    let excluded = |rel: &Path| {
        let abs = workdir.join(rel);
        exclude.iter().any(|x| abs.starts_with(x))
            || rel.components().any(|c| c.as_os_str() == ".srlm")
    };
    let mut patch = Vec::new();
    let mut dirty = false;
    for (i, delta) in diff.deltas().enumerate() {
        let Some(rel) = delta.new_file().path().or_else(|| delta.old_file().path()) else {
            continue;
        };
        if excluded(rel) {
            continue;
        }
        dirty = true;
        let abs = workdir.join(rel);
        let size = std::fs::symlink_metadata(&abs)
            .map(|m| m.len())
            .unwrap_or(0);
        if delta.status() == git2::Delta::Untracked && size > MAX_PATCH_FILE {
            let hash = hash_file(&abs)?;
            patch.extend_from_slice(
                format!(
                    "# untracked {} ({size} bytes, blake3 {hash}) not copied\n",
                    rel.display()
                )
                .as_bytes(),
            );
            continue;
        }
        if let Some(mut p) = git2::Patch::from_diff(&diff, i).map_err(git_err)? {
            patch.extend_from_slice(&p.to_buf().map_err(git_err)?);
        }
    }
    Ok(Some(CodeCapture {
        version: CodeVersion {
            repo: workdir.display().to_string(),
            remote: remote_url(&repo),
            commit,
            branch,
            dirty,
            patch: None,
        },
        patch: dirty.then_some(patch),
    }))
}

/// The URL of `origin` (else of the first remote), with any user name and password removed
/// (`https://user:token@host/x` records as `https://host/x`, `git@host:x` as `host:x`).
fn remote_url(repo: &git2::Repository) -> Option<String> {
    let names = repo.remotes().ok()?;
    let name = if names.iter().flatten().any(|n| n == "origin") {
        "origin".to_string()
    } else {
        names.iter().flatten().next()?.to_string()
    };
    let url = repo.find_remote(&name).ok()?.url()?.to_string();
    Some(strip_credentials(&url))
}

/// `url` without its user information.
pub fn strip_credentials(url: &str) -> String {
    if let Ok(mut u) = url::Url::parse(url) {
        if u.has_host() {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            return u.to_string();
        }
        return url.to_string(); // a local path (`file:`) carries no credentials
    }
    // scp-like `user@host:path`
    match url.split_once('@') {
        Some((user, rest)) if !user.contains('/') && rest.contains(':') => rest.to_string(),
        _ => url.to_string(),
    }
}

fn unborn_branch(repo: &git2::Repository) -> Option<String> {
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target()?;
    Some(
        target
            .strip_prefix("refs/heads/")
            .unwrap_or(target)
            .to_string(),
    )
}

fn hash_file(path: &Path) -> Result<String, ProvenanceError> {
    let io = |e| ProvenanceError::Io {
        path: path.to_path_buf(),
        err: e,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_all(repo: &git2::Repository) -> git2::Oid {
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.org").unwrap();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap()
    }

    #[test]
    fn outside_git_there_is_no_code_version() {
        let d = tempfile::tempdir().unwrap();
        assert!(capture_code(d.path(), &HashSet::new()).unwrap().is_none());
    }

    #[test]
    fn dirty_tree_never_looks_clean_and_srlm_data_is_not_code() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().canonicalize().unwrap();
        let repo = git2::Repository::init(&p).unwrap();
        std::fs::write(p.join("train.py"), "lr = 1e-6\n").unwrap();
        let oid = commit_all(&repo);
        std::fs::create_dir_all(p.join(".srlm")).unwrap();
        std::fs::write(p.join(".srlm/x"), "store internals").unwrap();
        std::fs::write(p.join("pairs.jsonl"), "{}\n").unwrap();
        let exclude: HashSet<PathBuf> = [p.join("pairs.jsonl")].into();

        let c = capture_code(&p, &exclude).unwrap().unwrap();
        assert_eq!(c.version.commit, Some(oid.to_string()));
        assert!(!c.version.dirty, "only srlm's data changed");
        assert!(c.patch.is_none());

        std::fs::write(p.join("train.py"), "lr = 5e-7\n").unwrap();
        std::fs::write(p.join("notes.txt"), "try beta 0.2\n").unwrap();
        let c = capture_code(&p, &exclude).unwrap().unwrap();
        assert!(c.version.dirty);
        let patch = String::from_utf8(c.patch.unwrap()).unwrap();
        assert!(
            patch.contains("-lr = 1e-6") && patch.contains("+lr = 5e-7"),
            "{patch}"
        );
        assert!(patch.contains("+try beta 0.2"), "{patch}");
        assert!(
            !patch.contains("pairs.jsonl") && !patch.contains("store internals"),
            "{patch}"
        );
    }

    #[test]
    fn remote_urls_are_recorded_without_credentials() {
        assert_eq!(
            strip_credentials("https://alice:s3cret@example.org/team/repo.git"),
            "https://example.org/team/repo.git"
        );
        assert_eq!(
            strip_credentials("ssh://git@example.org:22/team/repo"),
            "ssh://example.org:22/team/repo"
        );
        assert_eq!(
            strip_credentials("git@github.com:team/repo.git"),
            "github.com:team/repo.git"
        );
        assert_eq!(strip_credentials("/srv/git/repo"), "/srv/git/repo");
        let d = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(d.path()).unwrap();
        assert_eq!(remote_url(&repo), None);
        repo.remote("origin", "https://bob:tok@example.org/r.git")
            .unwrap();
        assert_eq!(
            remote_url(&repo).as_deref(),
            Some("https://example.org/r.git")
        );
    }

    #[test]
    fn run_key_ignores_key_order_but_not_values() {
        let stage = StageInfo {
            name: "judge".into(),
            version: "1".into(),
        };
        let id = ObjectId::of(b"x");
        let a = RunKey::new(
            &stage,
            [("responses", id)],
            &serde_json::json!({"k": 3, "t": 0.7}),
        );
        let b = RunKey::new(
            &stage,
            [("responses", id)],
            &serde_json::json!({"t": 0.7, "k": 3}),
        );
        let c = RunKey::new(
            &stage,
            [("responses", id)],
            &serde_json::json!({"t": 0.7, "k": 4}),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
