//! Reproduction: replay the runs upstream of a revision from their recorded inputs and
//! parameters, in scratch directories, and check every output id against the recorded one.
//!
//! Replay is a [`Registry`]: replay name (the stage name, or the record's `replay` field) → the
//! stage's declaration ([`StageDecl`]) and so its function, the same
//! `fn(&mut StageIo) -> Result<Metrics, StageFailure>` that
//! [`crate::stages::record::run_stage`] runs. To make a stage reproducible, declare it in
//! [`super::registry`] (its `BUILTIN` list is registered by [`default_registry`]).
//! During a replay `io.dir` is the scratch directory, `io.inputs` hold the recorded input
//! objects (written out from the store), `io.params` the recorded parameters, and the outputs
//! must be written to `io.outputs`. A function that cannot replay a record (code gone) returns
//! [`NotReplayable`]; the run is then reported as refused with its reason.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use srlm_store::{ObjectId, RunId, Store};

pub use super::code::ScriptCheck;
use super::compare::{describe_tensors, diff_rows, diff_tensors};
use super::decl::{StageDecl, StageFn};
pub use super::external::NotReplayable;
use super::inputs::external_state;
pub use super::inputs::ExternalState;
use super::record::{materialise, Progress, RecordError, StageIo};
use crate::lineage::{self, Direction, LineageError};
use crate::provenance::{ObjectRef, RunRecord};

/// The replay name of manual runs (`srlm commit --stage`): srlm did not run them, so it never
/// replays them, even when a stage of the same name is registered.
pub const MANUAL: &str = "manual";

/// Replay name → the declaration of the stage that replays it (its function with it, so a
/// name can never be paired with another stage's function).
#[derive(Default)]
pub struct Registry {
    map: BTreeMap<&'static str, &'static StageDecl>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a stage under its declared name; false (and nothing changed) when a stage of
    /// that name is registered already.
    pub fn register(&mut self, decl: &'static StageDecl) -> bool {
        if self.map.contains_key(decl.name) {
            return false;
        }
        self.map.insert(decl.name, decl);
        true
    }

    /// The function that replays runs named `name`.
    pub fn get(&self, name: &str) -> Option<StageFn> {
        self.map.get(name).map(|d| d.run)
    }

    /// The declaration registered under `name`.
    pub fn decl(&self, name: &str) -> Option<&'static StageDecl> {
        self.map.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().copied()
    }
}

/// Every replay function srlm knows: external commands (`srlm run`) and srlm's own stages
/// ([`super::registry::register_builtin`]).
pub fn default_registry() -> Registry {
    let mut reg = Registry::new();
    reg.register(&super::external::EXTERNAL);
    super::registry::register_builtin(&mut reg);
    reg
}

/// Errors that stop a reproduction as a whole (a run that cannot be replayed is a report, not
/// an error).
#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// One output of one replayed run.
#[derive(Debug, Clone)]
pub struct OutputCheck {
    pub role: String,
    pub path: String,
    pub recorded: ObjectId,
    /// None when the replay did not produce the file.
    pub reproduced: Option<ObjectId>,
    /// What differs, when it does (rows or tensors).
    pub detail: Option<String>,
}

impl OutputCheck {
    pub fn identical(&self) -> bool {
        self.reproduced == Some(self.recorded)
    }
}

/// The result of replaying one run.
#[derive(Debug, Clone)]
pub struct RunCheck {
    pub run: RunId,
    pub stage: String,
    /// Why the run was not replayed (missing input object, no replay function, code gone).
    pub refused: Option<String>,
    /// The replay ran and failed.
    pub failed: Option<String>,
    pub outputs: Vec<OutputCheck>,
    /// The server the run was replayed against (servers are often not bit-deterministic, so
    /// differing rows may be the server's doing); `None` for the in-process engine.
    pub server: Option<String>,
    /// The srlm version that recorded the run, when it is not this one.
    pub srlm_recorded: Option<String>,
    /// The code an external run was replayed with (a git commit + patch, or today's files).
    pub code: Option<String>,
    /// The files its command line named (scripts), compared with the record.
    pub scripts: Vec<ScriptCheck>,
    /// External inputs (outside the working directory): role, path and what was found.
    pub external: Vec<ExternalCheck>,
}

/// An external input of a replayed run, checked before use.
#[derive(Debug, Clone)]
pub struct ExternalCheck {
    pub role: String,
    pub path: String,
    pub recorded: ObjectId,
    pub state: ExternalState,
    /// The run was replayed from the copy in the store (the file changed or is gone).
    pub from_store: bool,
}

impl RunCheck {
    pub fn ok(&self) -> bool {
        self.refused.is_none()
            && self.failed.is_none()
            && self.outputs.iter().all(OutputCheck::identical)
    }
}

/// The runs upstream of `start` in replay order (roots first); `last` keeps the `last` runs
/// nearest the target.
pub fn upstream_runs(
    store: &Store,
    start: Vec<ObjectRef>,
    last: Option<usize>,
) -> Result<Vec<(RunId, RunRecord)>, ReproduceError> {
    let walk = lineage::walk(store, start, Direction::Up, None)?;
    let mut runs: Vec<_> = walk.runs.into_iter().collect();
    // deeper runs first: every run's inputs come from runs at a greater depth
    runs.sort_by(|a, b| {
        b.depth
            .cmp(&a.depth)
            .then_with(|| a.record.started.cmp(&b.record.started))
    });
    let skip = last.map(|n| runs.len().saturating_sub(n)).unwrap_or(0);
    Ok(runs
        .into_iter()
        .skip(skip)
        .map(|r| (r.id, r.record))
        .collect())
}

/// Replay `runs` (from [`upstream_runs`]) with `registry`, each in its own scratch directory,
/// in the store of working directory `workdir` (opened only around each replay, not during it).
pub fn replay_runs(
    workdir: &Path,
    runs: &[(RunId, RunRecord)],
    registry: &Registry,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<RunCheck>, ReproduceError> {
    let mut checks = Vec::new();
    for (i, (run, record)) in runs.iter().enumerate() {
        let msg = format!(
            "replaying {} (run {}), {}/{}",
            record.stage.name,
            run.short(),
            i + 1,
            runs.len()
        );
        progress(Progress {
            done: i as u64,
            total: runs.len() as u64,
            message: &msg,
        });
        checks.push(replay_one(workdir, *run, record, registry, progress)?);
    }
    Ok(checks)
}

fn replay_one(
    workdir: &Path,
    run: RunId,
    record: &RunRecord,
    registry: &Registry,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunCheck, ReproduceError> {
    let mut check = RunCheck {
        run,
        stage: record.stage.name.clone(),
        refused: None,
        failed: None,
        outputs: Vec::new(),
        server: None,
        srlm_recorded: (record.env.srlm != env!("CARGO_PKG_VERSION"))
            .then(|| record.env.srlm.clone()),
        code: None,
        scripts: Vec::new(),
        external: Vec::new(),
    };
    if record.replay_name() == MANUAL {
        check.refused = Some(format!(
            "`{}` is manual provenance (srlm commit --stage): srlm did not run it, so it cannot replay it",
            record.stage.name
        ));
        return Ok(check);
    }
    let Some(f) = registry.get(record.replay_name()) else {
        check.refused = Some(format!(
            "no replay function is registered for stage `{}` (known: {})",
            record.replay_name(),
            registry.names().collect::<Vec<_>>().join(", ")
        ));
        return Ok(check);
    };
    if let Some(target) = super::model_io::server_of(&record.params) {
        check.server = Some(target.url.clone());
        // an unreachable endpoint is a refusal with its reason, not a failed replay
        if let Err(e) = super::model_io::probe_server(&target, &record.engine) {
            check.refused = Some(format!("the recorded server does not answer: {e}"));
            return Ok(check);
        }
    }
    let store = Store::open(workdir)?;
    // an external input is checked (a stat when unchanged) and read in place, or replayed from
    // its copy in the store; any other input must be in the store
    let mut external = BTreeMap::new();
    for (role, o) in &record.inputs {
        if let Some(state) = external_state(&store, o) {
            let from_store = state != ExternalState::Unchanged && store.has_object(&o.id)?;
            check.external.push(ExternalCheck {
                role: role.clone(),
                path: o.path.clone(),
                recorded: o.id,
                state: state.clone(),
                from_store,
            });
            if state != ExternalState::Unchanged && !from_store {
                check.refused = Some(format!(
                    "input {role} ({}, outside the working directory) has {}: the run read {}, \
                     and no copy was stored with the run",
                    o.path,
                    match &state {
                        ExternalState::Changed(_) => "changed since the run".to_string(),
                        other => other.describe(),
                    },
                    o.id.short()
                ));
                return Ok(check);
            }
            external.insert(role.clone(), from_store);
        } else if !store.has_object(&o.id)? {
            check.refused = Some(format!(
                "input {role} ({} {}) is missing from the store",
                o.path,
                o.id.short()
            ));
            return Ok(check);
        }
    }
    // scratch lives in the store (same file system, cleaned after a kill), removed on return
    let scratch = store.scratch_dir("replay")?;
    let code = if record.replay_name() == super::external::REPLAY {
        match super::code::prepare(&store, record, workdir, scratch.path()) {
            Ok(c) => Some(c),
            Err(e) => {
                check.refused = Some(e.0);
                return Ok(check);
            }
        }
    } else {
        None
    };
    let dir = match &code {
        Some(c) => c.dir.clone(),
        None => scratch.path().join("work"),
    };
    if let Some(c) = code {
        check.code = Some(c.source);
        check.scripts = c.scripts;
    }
    let recorded_dir = scratch.path().join("recorded");
    let mut inputs = BTreeMap::new();
    let mut placed: BTreeMap<String, ObjectId> = BTreeMap::new();
    for (role, o) in &record.inputs {
        match external.get(role) {
            Some(false) => {
                inputs.insert(role.clone(), PathBuf::from(&o.path));
                continue;
            }
            Some(true) => {
                let name = Path::new(&o.path).file_name().unwrap_or_default();
                let dest = dir.join(".srlm-inputs").join(role).join(name);
                materialise(&store, o, &dest)?;
                inputs.insert(role.clone(), dest);
                continue;
            }
            None => {}
        }
        // a recorded path is placed under the scratch folder: never absolute, `..` or `.git`
        if let Err(e) = srlm_store::check_tree_path(&o.path) {
            check.refused = Some(format!("input {role}: recorded path refused: {e}"));
            return Ok(check);
        }
        // inputs go to their recorded paths (commands name them so); two different objects
        // recorded at one path go under a per-role directory instead
        let rel = match placed.get(&o.path) {
            Some(id) if *id != o.id => format!(".srlm-inputs/{role}/{}", o.path),
            _ => o.path.clone(),
        };
        let dest = dir.join(&rel);
        // (over a checked-out copy: the recorded object is what the run read)
        if !placed.contains_key(&rel) {
            materialise(&store, o, &dest)?;
        }
        placed.insert(rel, o.id);
        inputs.insert(role.clone(), dest);
    }
    let mut outputs = BTreeMap::new();
    for (role, o) in &record.outputs {
        let dest = dir.join(&o.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|err| ReproduceError::Io {
                path: parent.to_path_buf(),
                err,
            })?;
        }
        // a checked-out copy is not the replay's output (an input placed there, e.g. the
        // policy DPO overwrites, stays: the stage reads it first)
        if !placed.contains_key(&o.path) {
            let _ = std::fs::remove_file(&dest);
        }
        outputs.insert(role.clone(), dest);
    }
    std::fs::create_dir_all(&dir).map_err(|err| ReproduceError::Io {
        path: dir.clone(),
        err,
    })?;
    drop(store);
    let mut io = StageIo {
        dir: &dir,
        workdir,
        params: &record.params,
        inputs,
        outputs: outputs.clone(),
        progress,
        engine: record.engine.clone(),
        journal: None,
    };
    if let Err(e) = f(&mut io) {
        if let Some(n) = e.downcast_ref::<NotReplayable>() {
            check.refused = Some(n.0.clone());
        } else {
            check.failed = Some(e.to_string());
        }
        return Ok(check);
    }
    let store = Store::open(workdir)?;
    for (role, o) in &record.outputs {
        let produced = &outputs[role];
        // an absolute path is hashed where it is, exactly as `add` would (kind from its name)
        let unit = crate::unit::files_of(&store, o.id)?.is_some();
        let reproduced = if unit && produced.is_dir() {
            Some(store.hash_folder(produced, o.kind)?.id.0)
        } else if !unit && produced.is_file() {
            Some(store.hash_file(&produced.to_string_lossy())?.id.0)
        } else {
            None
        };
        let mut out = OutputCheck {
            role: role.clone(),
            path: o.path.clone(),
            recorded: o.id,
            reproduced,
            detail: None,
        };
        if reproduced.is_none() {
            out.detail = Some("the replay did not write it".into());
        } else if !out.identical() {
            let rec_path = recorded_dir.join(&o.path);
            materialise(&store, o, &rec_path)?;
            out.detail = Some(describe_difference(&rec_path, produced, o));
        }
        check.outputs.push(out);
    }
    Ok(check)
}

/// Rows that differ for datasets, tensors for safetensors checkpoints, the files that differ
/// (and how) for a checkpoint folder, else sizes.
fn describe_difference(recorded: &Path, reproduced: &Path, o: &ObjectRef) -> String {
    if recorded.is_dir() {
        return super::compare::diff_folders(recorded, reproduced, |name, a, b| {
            let file = ObjectRef::new(o.id, srlm_store::EntryKind::for_path(name), name);
            describe_difference(a, b, &file)
        });
    }
    if o.kind == srlm_store::EntryKind::Dataset {
        return match diff_rows(recorded, reproduced) {
            Ok(d) => format!(
                "{} of {} recorded rows differ; {} of {} reproduced rows are new",
                d.only_recorded, d.rows_recorded, d.only_reproduced, d.rows_reproduced
            ),
            Err(e) => format!("rows not compared: {e}"),
        };
    }
    if o.path.ends_with(".safetensors") {
        return match diff_tensors(recorded, reproduced) {
            Ok(d) if d.is_empty() => "tensors equal; metadata differs".into(),
            Ok(d) => describe_tensors(&d),
            Err(e) => format!("tensors not compared: {e}"),
        };
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    format!(
        "{} bytes recorded, {} reproduced",
        size(recorded),
        size(reproduced)
    )
}
