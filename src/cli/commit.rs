//! `srlm commit`.
use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context};
use serde_json::Value;
use srlm_store::{CommitOptions, Store};

use super::{CheckFailed, Ctx};
use crate::hooks::{commit_paths_with_hooks, commit_with_hooks_verify, CommitError, HookError};
use crate::provenance::{record_code, ObjectRef, RunRecord, StageInfo};
use crate::stages::record::{pending_run, resolve_object, tracked_paths};

/// Record the staged files as a commit. The pre-commit hook (`.srlm/hooks/pre-commit`; the
/// shipped one validates every staged dataset) runs first and can abort it; post-commit after.
///
/// With --stage, the commit carries a run record: manual provenance for a stage that ran outside
/// srlm. Its inputs (--input ROLE=REV:PATH or ROLE=PATH, resolved to object ids), parameters and
/// metrics (--param/--metric K=V, V parsed as JSON when it is JSON, else kept as a string), the
/// code version of the enclosing git repository (commit, branch, dirty flag, uncommitted diff)
/// and the machine are recorded; its outputs are the files this commit adds or changes. Without
/// --stage, a run left pending by `--no-commit` is attached.
///
/// With PATH…, those paths are staged and committed in one step under the store lock, on top of
/// HEAD, whatever else is staged: concurrent committers of their own files each get a commit
/// holding exactly what they named. Without PATH…, the staging area is shared by every process
/// working in the store: a commit takes what is staged when it runs.
///
/// Example: `srlm commit -m "AIFT(M1) from the cluster" --stage trl-pairs --input responses=M1:responses.jsonl --param seed=7 --metric pairs=583`
/// Example: `srlm commit -m "judged by worker 3" judgements/worker3.jsonl`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stage and commit exactly these paths (files or folders), in one step.
    pub paths: Vec<std::path::PathBuf>,
    /// The commit message.
    #[arg(short, long)]
    pub message: String,
    /// Author (default: $SRLM_AUTHOR, then $USER).
    #[arg(long)]
    pub author: Option<String>,
    /// Commit even if nothing changed.
    #[arg(long)]
    pub allow_empty: bool,
    /// Print the commit (and run) id as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip the pre-commit hook (e.g. to store a third-party dataset exactly as published,
    /// pairs with chosen == rejected included).
    #[arg(long)]
    pub no_verify: bool,
    /// Attach a run record for this stage (manual provenance).
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// The stage's version.
    #[arg(long, value_name = "V", default_value = "1")]
    pub stage_version: String,
    /// An input of the stage: ROLE=REV:PATH (a committed file) or ROLE=PATH (a working-tree file).
    #[arg(long = "input", value_name = "ROLE=REF", requires = "stage")]
    pub inputs: Vec<String>,
    /// A parameter of the stage (seed, sampling settings, …).
    #[arg(long = "param", value_name = "K=V", requires = "stage")]
    pub params: Vec<String>,
    /// A metric the stage reported.
    #[arg(long = "metric", value_name = "K=V", requires = "stage")]
    pub metrics: Vec<String>,
}

/// `K=V` pairs as a JSON map (V as JSON when it parses, else a string).
fn key_values(specs: &[String], what: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut m = BTreeMap::new();
    for spec in specs {
        let Some((k, v)) = spec.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--{what} {spec:?}: expected KEY=VALUE");
        };
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        if m.insert(k.to_string(), v).is_some() {
            bail!("--{what} {k} is given twice");
        }
    }
    Ok(m)
}

/// Build and store the manual run record; returns its id.
fn manual_run(
    store: &mut Store,
    args: &Args,
    stage: &str,
    ctx: &Ctx,
) -> anyhow::Result<srlm_store::RunId> {
    let params = key_values(&args.params, "param")?;
    let metrics = key_values(&args.metrics, "metric")?;
    let mut inputs = BTreeMap::new();
    for (role, reference) in super::run::parse_inputs(store, &ctx.cwd, &args.inputs)? {
        let (obj, _) = resolve_object(store, &reference)
            .with_context(|| format!("--input {role}={reference}"))?;
        if inputs.insert(role.clone(), obj).is_some() {
            bail!("--input {role} is given twice");
        }
    }
    // outputs: what this commit adds or changes (only under the named paths, when given)
    if !args.paths.is_empty() {
        store.add(&ctx.cwd, &args.paths)?;
    }
    let only: Vec<String> = args
        .paths
        .iter()
        .map(|p| store.tree_path(&ctx.cwd, p))
        .collect::<Result<_, _>>()?;
    let staged = store.staged()?;
    let head_tree = match store.head()?.commit() {
        Some(c) => store.commit_tree(&c)?,
        None => Default::default(),
    };
    let outputs: BTreeMap<String, ObjectRef> = staged
        .entries
        .iter()
        .filter(|(p, e)| head_tree.entries.get(*p) != Some(*e))
        .filter(|(p, _)| {
            only.is_empty()
                || only
                    .iter()
                    .any(|o| o.is_empty() || *p == o || p.starts_with(&format!("{o}/")))
        })
        .map(|(p, e)| {
            (
                p.clone(),
                ObjectRef {
                    id: e.id.0,
                    kind: e.kind,
                    path: p.clone(),
                    external_path: None,
                },
            )
        })
        .collect();
    let workdir = store.workdir().to_path_buf();
    let exclude: HashSet<_> = tracked_paths(store)?
        .into_iter()
        .map(|p| workdir.join(p))
        .collect();
    let code = record_code(store, &workdir, &exclude)?;
    let stage = StageInfo {
        name: stage.to_string(),
        version: args.stage_version.clone(),
    };
    let params = Value::Object(params.into_iter().collect());
    let mut record = RunRecord::start(
        stage,
        inputs,
        params,
        Value::Object(Default::default()),
        code,
    );
    record.replay = Some(crate::stages::reproduce::MANUAL.to_string());
    record.outputs = outputs;
    record.metrics = metrics;
    Ok(record.store(store)?)
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    let run = match &args.stage {
        Some(stage) => Some(manual_run(&mut store, &args, stage, ctx)?),
        None => pending_run(&store)?,
    };
    drop(store);
    let opts = CommitOptions {
        message: args.message.clone(),
        author: args.author.clone(),
        run,
        allow_empty: args.allow_empty,
    };
    let committed = if args.paths.is_empty() {
        commit_with_hooks_verify(&ctx.cwd, &opts, !args.no_verify)
    } else {
        commit_paths_with_hooks(&ctx.cwd, &args.paths, &opts, !args.no_verify)
    };
    let done = match committed {
        Ok(d) => d,
        Err(CommitError::Hook(e @ HookError::Rejected { .. })) => {
            return Err(CheckFailed(format!("{e}\nnothing was committed")).into())
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(Err(e)) = &done.post_commit {
        writeln!(ctx.err, "warning: {e} (the commit stands)")?;
    }
    // from the commit itself: reopening the store here could fail on a busy lock after the
    // commit was made
    let branch = done
        .branch
        .clone()
        .unwrap_or_else(|| "detached HEAD".into());
    if args.json {
        let v = serde_json::json!({"commit": done.id, "branch": branch, "run": run});
        writeln!(ctx.out, "{v}")?;
    } else {
        writeln!(ctx.out, "[{branch} {}] {}", done.id.short(), args.message)?;
        if let Some(r) = run {
            writeln!(ctx.out, "run {}", r.short())?;
        }
    }
    Ok(())
}
