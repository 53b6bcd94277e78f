//! The stage wrapper: runs one stage with provenance, written once for every stage.
//!
//! A stage is a plain function `FnOnce(&mut StageIo) -> Result<Metrics, StageFailure>`: it reads
//! its inputs from `io.inputs[role]`, its parameters from `io.params`, writes `io.outputs[role]`,
//! reports progress through `io.progress`, and returns metrics. It knows nothing about the
//! store. [`run_stage`] around it:
//!
//! 1. resolves every input (`REV:path` or a working-tree path) to an object id and hashes it
//!    BEFORE the stage runs (working-tree inputs are staged, so they are committed with the
//!    outputs and stay reachable);
//! 2. captures the code version (git2) and environment;
//! 3. if [`Stage::reuse`] is set and a committed run has the same stage, inputs and params
//!    ([`find_committed`]), returns it instead of running (a resumed loop skips finished stages);
//! 4. runs the stage WITHOUT holding the store (its lock is released, so a long job does not
//!    block `srlm log`, and a stage may call srlm itself), then hashes and stages the outputs
//!    AFTER, writes the run record (`put_run`) and commits (with the pre-/post-commit hooks), or
//!    leaves everything staged with the record pending for `srlm commit` when [`Stage::commit`]
//!    is false;
//! 5. on failure, stores a `failed` record (so the attempt is on record) and commits nothing.
//!
//! ```ignore
//! let stage = Stage::new("pairs", "1")
//!     .input("judgements", "HEAD:judged.jsonl")
//!     .output("pairs", "aift.jsonl")
//!     .params(serde_json::json!({"drop_ties": true}));
//! let outcome = run_stage(&workdir, &stage, &mut |_| {}, |io| {
//!     let n = make_pairs(&io.inputs["judgements"], &io.outputs["pairs"])?;
//!     Ok([("pairs".to_string(), n.into())].into())
//! })?;
//! ```
//! The same function is what `srlm reproduce` replays: register it under the stage name in
//! [`crate::stages::reproduce::Registry`].
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use srlm_store::{CommitId, CommitOptions, RunId, Store};

use super::inputs::resolve_inputs;
pub use super::inputs::{materialise, resolve_object};

use crate::provenance::{
    now_rfc3339, record_code, ObjectRef, ProvenanceError, RunKey, RunRecord, RunStatus, StageInfo,
};

/// Metrics a stage returns (name → number, string, …), recorded in the run record.
pub type Metrics = BTreeMap<String, Value>;

/// The error a stage function returns; its message is recorded in the failed run.
pub type StageFailure = Box<dyn std::error::Error + Send + Sync>;

/// Progress of a long stage: `done` of `total` units (`total` 0 when unknown), and a message.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub done: u64,
    pub total: u64,
    pub message: &'a str,
}

/// What a stage function sees.
pub struct StageIo<'a> {
    /// The directory relative paths are resolved against (the store's working directory, or a
    /// scratch directory during a replay). External commands run here.
    pub dir: &'a Path,
    /// The store's working directory (equal to `dir` except during a replay).
    pub workdir: &'a Path,
    /// Parameters, exactly as recorded.
    pub params: &'a Value,
    /// Input role → file to read (absolute).
    pub inputs: BTreeMap<String, PathBuf>,
    /// Output role → file to write (absolute; its directory exists).
    pub outputs: BTreeMap<String, PathBuf>,
    /// Progress callback.
    pub progress: &'a mut dyn FnMut(Progress),
    /// The engine's choices: on entry what the caller asked for (e.g. a server client's
    /// options), and what the stage leaves here (its backend's description) is recorded as
    /// the run's `engine`.
    pub engine: Value,
    /// Where the stage may journal finished rows so a re-run of the same run key resumes
    /// ([`super::journal`]); `None` during a replay.
    pub journal: Option<PathBuf>,
}

/// One stage invocation: identity, inputs, outputs, parameters, engine choices.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    pub version: String,
    /// Role → `REV:path` (a committed file) or a path relative to the working directory.
    pub inputs: Vec<(String, String)>,
    /// Role → path relative to the working directory.
    pub outputs: Vec<(String, String)>,
    pub params: Value,
    pub engine: Value,
    /// Commit message (default: `stage NAME`).
    pub message: Option<String>,
    /// Commit the outputs with the run (default), or only stage them (`--no-commit`).
    pub commit: bool,
    /// Skip running when a committed run has the same stage, inputs and params.
    pub reuse: bool,
    /// Replay function name, when it is not the stage name (`external` for `srlm run`).
    pub replay: Option<String>,
    /// Copy inputs outside the working directory into the store (by default they are only
    /// hashed and recorded by id and path; see [`super::inputs`]).
    pub store_inputs: bool,
}

impl Stage {
    pub fn new(name: &str, version: &str) -> Self {
        Stage {
            name: name.to_string(),
            version: version.to_string(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: Value::Object(Default::default()),
            engine: Value::Object(Default::default()),
            message: None,
            commit: true,
            reuse: false,
            replay: None,
            store_inputs: false,
        }
    }
    pub fn input(mut self, role: &str, reference: &str) -> Self {
        self.inputs.push((role.to_string(), reference.to_string()));
        self
    }
    pub fn output(mut self, role: &str, path: &str) -> Self {
        self.outputs.push((role.to_string(), path.to_string()));
        self
    }
    pub fn params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }
    pub fn engine(mut self, engine: Value) -> Self {
        self.engine = engine;
        self
    }
}

/// Errors of the wrapper (the stage's own failure is [`RecordError::StageFailed`]).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    #[error(transparent)]
    Commit(#[from] crate::hooks::CommitError),
    #[error("stage {stage}: input {role}={reference}: {reason}")]
    BadInput {
        stage: String,
        role: String,
        reference: String,
        reason: String,
    },
    #[error("stage {stage}: output {role}={path}: {reason}")]
    BadOutput {
        stage: String,
        role: String,
        path: String,
        reason: String,
    },
    #[error(
        "stage {stage} failed (run {run} records the failure; nothing was committed): {message}"
    )]
    StageFailed {
        stage: String,
        run: RunId,
        message: String,
    },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// What [`run_stage`] did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub run: RunId,
    pub record: RunRecord,
    /// The commit holding the outputs (None with `commit: false`).
    pub commit: Option<CommitId>,
    /// True when a committed run was reused instead of running the stage.
    pub reused: bool,
}

/// Run `f` as stage `stage` in the store that contains `dir` (see the module docs).
pub fn run_stage(
    dir: &Path,
    stage: &Stage,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&mut StageIo) -> Result<Metrics, StageFailure>,
) -> Result<Outcome, RecordError> {
    let mut store = Store::discover(dir)?;
    let scratch = store.scratch_dir("stage")?;
    let workdir = store.workdir().to_path_buf();
    let inputs = resolve_inputs(&mut store, stage, scratch.path(), progress)?;
    let stage_info = StageInfo {
        name: stage.name.clone(),
        version: stage.version.clone(),
    };
    let key = RunKey::new(
        &stage_info,
        inputs.iter().map(|(r, x)| (r.as_str(), x.obj.id)),
        &stage.params,
    );
    if stage.reuse {
        if let Some((commit, run, record)) = find_committed(&store, key)? {
            return Ok(Outcome {
                run,
                record,
                commit: Some(commit),
                reused: true,
            });
        }
    }
    let mut outputs = BTreeMap::new();
    for (role, rel) in &stage.outputs {
        outputs.insert(
            role.clone(),
            (rel.clone(), checked_output(stage, role, rel, &workdir)?),
        );
    }
    // srlm's own data is recorded by id: it is not the user's code
    let mut exclude: HashSet<PathBuf> = tracked_paths(&store)?
        .into_iter()
        .map(|p| workdir.join(p))
        .collect();
    exclude.extend(outputs.values().map(|(_, abs)| abs.clone()));
    exclude.extend(inputs.values().map(|x| x.path.clone()));
    let code = record_code(&store, &workdir, &exclude)?;
    let mut record = RunRecord::start(
        stage_info,
        inputs
            .iter()
            .map(|(r, x)| (r.clone(), x.obj.clone()))
            .collect(),
        stage.params.clone(),
        stage.engine.clone(),
        code,
    );
    record.replay = stage.replay.clone();
    let journal = store.journal_dir().join(format!("{}.jsonl", key.hex()));
    drop(store);
    let mut io = StageIo {
        dir: &workdir,
        workdir: &workdir,
        params: &stage.params,
        inputs: inputs
            .iter()
            .map(|(r, x)| (r.clone(), x.path.clone()))
            .collect(),
        outputs: outputs
            .iter()
            .map(|(r, (_, abs))| (r.clone(), abs.clone()))
            .collect(),
        progress,
        engine: stage.engine.clone(),
        journal: Some(journal.clone()),
    };
    let result = f(&mut io);
    record.engine = std::mem::take(&mut io.engine);
    record.finished = now_rfc3339();
    let mut store = Store::open(&workdir)?;
    record.metrics = match result {
        Ok(m) => m,
        Err(e) => {
            record.status = RunStatus::Failed;
            record.error = Some(e.to_string());
            let run = record.store(&store)?;
            return Err(RecordError::StageFailed {
                stage: stage.name.clone(),
                run,
                message: e.to_string(),
            });
        }
    };
    // outputs are hashed only now, after the stage wrote them
    for (role, (rel, abs)) in &outputs {
        if !abs.is_file() && !crate::unit::is_checkpoint_dir(abs) {
            return Err(RecordError::BadOutput {
                stage: stage.name.clone(),
                role: role.clone(),
                path: rel.clone(),
                reason: "the stage did not write it".into(),
            });
        }
    }
    let rels: Vec<PathBuf> = outputs
        .values()
        .map(|(rel, _)| PathBuf::from(rel))
        .collect();
    store.add(&workdir, &rels)?;
    let staged = store.staged()?;
    for (role, (rel, abs)) in &outputs {
        let e = if abs.is_dir() {
            // a checkpoint folder: one unit, the one its commit's tree will hold
            &crate::unit::unit_of(&store, &staged.entries, rel)?.ok_or_else(|| {
                RecordError::BadOutput {
                    stage: stage.name.clone(),
                    role: role.clone(),
                    path: rel.clone(),
                    reason: "the folder is not a checkpoint".into(),
                }
            })?
        } else {
            &staged.entries[rel.as_str()]
        };
        record
            .outputs
            .insert(role.clone(), ObjectRef::new(e.id.0, e.kind, rel.clone()));
    }
    let run = record.store(&store)?;
    // the run is on record: the journal of its rows is no longer needed
    match std::fs::remove_file(&journal) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            return Err(RecordError::Io { path: journal, err })
        }
        _ => {}
    }
    let commit = if stage.commit {
        drop(store);
        let opts = CommitOptions {
            message: stage
                .message
                .clone()
                .unwrap_or_else(|| format!("stage {}", stage.name)),
            run: Some(run),
            // the run is news even when its outputs equal the parent's files
            allow_empty: true,
            ..Default::default()
        };
        Some(crate::hooks::commit_with_hooks(&workdir, &opts)?.id)
    } else {
        set_pending_run(&store, run)?;
        None
    };
    Ok(Outcome {
        run,
        record,
        commit,
        reused: false,
    })
}

/// Paths srlm tracks (staged or in HEAD), relative to the working directory.
pub fn tracked_paths(store: &Store) -> Result<Vec<String>, RecordError> {
    let mut paths: Vec<String> = store.staged()?.entries.into_keys().collect();
    if let Some(head) = store.head()?.commit() {
        paths.extend(store.commit_tree(&head)?.entries.into_keys());
    }
    Ok(paths)
}

fn checked_output(
    stage: &Stage,
    role: &str,
    rel: &str,
    workdir: &Path,
) -> Result<PathBuf, RecordError> {
    let bad = |reason: String| RecordError::BadOutput {
        stage: stage.name.clone(),
        role: role.to_string(),
        path: rel.to_string(),
        reason,
    };
    srlm_store::check_tree_path(rel).map_err(|e| bad(e.to_string()))?;
    let abs = workdir.join(rel);
    if let Some(parent) = abs.parent() {
        std::fs::create_dir_all(parent).map_err(|err| RecordError::Io {
            path: parent.to_path_buf(),
            err,
        })?;
    }
    Ok(abs)
}

/// The committed run (reachable from HEAD) with this key, newest first, if any.
pub fn find_committed(
    store: &Store,
    key: RunKey,
) -> Result<Option<(CommitId, RunId, RunRecord)>, RecordError> {
    let Some(head) = store.head()?.commit() else {
        return Ok(None);
    };
    for (id, c) in store.log(&head)? {
        let Some(run) = c.run else { continue };
        let record = RunRecord::load(store, run)?;
        if record.status == RunStatus::Ok && record.key() == key {
            return Ok(Some((id, run, record)));
        }
    }
    Ok(None)
}

/// The pin (see `Store::set_pin`) naming a run whose outputs are staged but not committed
/// (`--no-commit`): the next `srlm commit` attaches it, and until then gc keeps it.
pub const PENDING_PIN: &str = "pending-run";

/// Remember a run whose outputs are staged but not committed.
pub fn set_pending_run(store: &Store, run: RunId) -> Result<(), RecordError> {
    Ok(store.set_pin(PENDING_PIN, Some(&run.0))?)
}

/// The pending run, if any.
pub fn pending_run(store: &Store) -> Result<Option<RunId>, RecordError> {
    Ok(store.pin(PENDING_PIN)?.map(RunId))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(io: &mut StageIo) -> Result<Metrics, StageFailure> {
        let text = std::fs::read_to_string(&io.inputs["src"])?;
        std::fs::write(&io.outputs["out"], text.to_uppercase())?;
        Ok([("rows".to_string(), Value::from(text.lines().count()))].into())
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let wd = d.path().canonicalize().unwrap();
        Store::init(&wd).unwrap();
        std::fs::write(wd.join("in.jsonl"), "{\"a\":\"x\"}\n{\"a\":\"y\"}\n").unwrap();
        (d, wd)
    }

    fn stage() -> Stage {
        Stage::new("upper", "1")
            .input("src", "in.jsonl")
            .output("out", "out/up.jsonl")
            .params(serde_json::json!({"seed": 7}))
    }

    #[test]
    fn a_stage_is_recorded_committed_and_indexed() {
        let (_d, wd) = setup();
        let o = run_stage(&wd, &stage(), &mut |_| {}, upper).unwrap();
        assert!(!o.reused);
        assert_eq!(
            std::fs::read_to_string(wd.join("out/up.jsonl")).unwrap(),
            "{\"A\":\"X\"}\n{\"A\":\"Y\"}\n"
        );
        let store = Store::open(&wd).unwrap();
        let commit = store.read_commit(&o.commit.unwrap()).unwrap();
        assert_eq!(commit.run, Some(o.run));
        let tree = store.read_tree(&commit.tree).unwrap();
        // the output and the working-tree input are both committed, with the recorded ids
        assert_eq!(
            tree.entries["out/up.jsonl"].id.0,
            o.record.outputs["out"].id
        );
        assert_eq!(tree.entries["in.jsonl"].id.0, o.record.inputs["src"].id);
        assert_eq!(
            store.runs_producing(&o.record.outputs["out"].id).unwrap(),
            vec![o.run]
        );
        assert_eq!(
            store.runs_consuming(&o.record.inputs["src"].id).unwrap(),
            vec![o.run]
        );
        let rec = RunRecord::load(&store, o.run).unwrap();
        assert_eq!(rec.metrics["rows"], 2);
        assert_eq!(rec.params["seed"], 7);
        assert_eq!(rec.status, RunStatus::Ok);
    }

    #[test]
    fn a_committed_run_is_reused_and_a_changed_param_is_not() {
        let (_d, wd) = setup();
        let first = run_stage(&wd, &stage(), &mut |_| {}, upper).unwrap();
        let mut again = stage();
        again.reuse = true;
        let o = run_stage(&wd, &again, &mut |_| {}, |_| panic!("must not run again")).unwrap();
        assert!(o.reused);
        assert_eq!((o.run, o.commit), (first.run, first.commit));
        again.params = serde_json::json!({"seed": 8});
        let o = run_stage(&wd, &again, &mut |_| {}, upper).unwrap();
        assert!(!o.reused);
        assert_ne!(o.run, first.run);
    }

    #[test]
    fn a_failed_stage_commits_nothing_but_is_on_record() {
        let (_d, wd) = setup();
        let e = run_stage(&wd, &stage(), &mut |_| {}, |_| Err("out of memory".into())).unwrap_err();
        let RecordError::StageFailed { run, message, .. } = e else {
            panic!("{e}")
        };
        assert_eq!(message, "out of memory");
        let store = Store::open(&wd).unwrap();
        assert_eq!(store.head().unwrap().commit(), None);
        let rec = RunRecord::load(&store, run).unwrap();
        assert_eq!(rec.status, RunStatus::Failed);
        assert!(rec.outputs.is_empty());
    }

    #[test]
    fn no_commit_leaves_the_run_pending() {
        let (_d, wd) = setup();
        let mut s = stage();
        s.commit = false;
        let o = run_stage(&wd, &s, &mut |_| {}, upper).unwrap();
        assert!(o.commit.is_none());
        let store = Store::open(&wd).unwrap();
        assert_eq!(pending_run(&store).unwrap(), Some(o.run));
        assert!(store.staged().unwrap().entries.contains_key("out/up.jsonl"));
        assert_eq!(store.head().unwrap().commit(), None);
    }

    #[test]
    fn committed_inputs_are_read_from_the_store_when_the_file_changed() {
        let (_d, wd) = setup();
        run_stage(&wd, &stage(), &mut |_| {}, upper).unwrap();
        std::fs::write(wd.join("in.jsonl"), "{\"a\":\"changed\"}\n").unwrap();
        let s = Stage::new("upper", "1")
            .input("src", "HEAD:in.jsonl")
            .output("out", "again.jsonl");
        let o = run_stage(&wd, &s, &mut |_| {}, upper).unwrap();
        assert_eq!(
            std::fs::read_to_string(wd.join("again.jsonl")).unwrap(),
            "{\"A\":\"X\"}\n{\"A\":\"Y\"}\n"
        );
        assert_eq!(o.record.inputs["src"].path, "in.jsonl");
        let bad = Stage::new("upper", "1")
            .input("src", "HEAD:missing.jsonl")
            .output("out", "x.jsonl");
        let e = run_stage(&wd, &bad, &mut |_| {}, upper)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("src=HEAD:missing.jsonl") && e.contains("missing.jsonl"),
            "{e}"
        );
    }
}
