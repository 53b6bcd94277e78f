//! `srlm run`.
use std::path::Path;

use anyhow::{bail, Context};
use srlm_store::Store;

use super::Ctx;
use crate::hooks::{CommitError, HookError};
use crate::stages::external;
use crate::stages::record::{run_stage, RecordError, Stage};

/// Run any external command as a stage (a TRL script, a vLLM job, a shell pipeline) and record
/// it: the inputs are hashed BEFORE the command runs, the outputs AFTER; the command line, the
/// directory, the environment variables that shape it (LANG, LC_ALL, PYTHONHASHSEED,
/// CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS, TZ, plus any named with --env), the BLAKE3 of every
/// file the command line names (your scripts), the exit status, the code version (git) and the
/// machine go into a run record, and the outputs are committed with it. A failing command
/// records its failure and commits nothing. The command sees SRLM_INPUT_<ROLE> and
/// SRLM_OUTPUT_<ROLE> (absolute paths). `srlm reproduce` replays it.
///
/// Example: `srlm run --stage sort --input data=raw.jsonl --output sorted.jsonl -- sh -c 'sort raw.jsonl > sorted.jsonl'`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stage name recorded in the run (e.g. `trl-dpo`).
    #[arg(long)]
    pub stage: String,
    /// Stage version recorded in the run.
    #[arg(long, default_value = "1")]
    pub stage_version: String,
    /// An input: ROLE=PATH (a working-tree file; or a file or folder outside the working
    /// directory, hashed and recorded by absolute path and id, not copied) or ROLE=REV:PATH (a
    /// committed file).
    #[arg(long = "input", value_name = "ROLE=REF")]
    pub inputs: Vec<String>,
    /// Also copy inputs outside the working directory into the store (so the run can be
    /// replayed after they change or are gone).
    #[arg(long)]
    pub store_input: bool,
    /// An output file the command writes: [ROLE=]PATH (the role defaults to the path).
    #[arg(long = "output", value_name = "[ROLE=]PATH", required = true)]
    pub outputs: Vec<String>,
    /// Also record (and replay with) this environment variable.
    #[arg(long = "env", value_name = "NAME")]
    pub env: Vec<String>,
    /// Commit message (default: `stage NAME`).
    #[arg(short, long)]
    pub message: Option<String>,
    /// Stage the outputs and keep the run pending for a later `srlm commit`.
    #[arg(long)]
    pub no_commit: bool,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A user path (relative to the current directory) as a path relative to the working directory.
pub(crate) fn workdir_relative(workdir: &Path, cwd: &Path, p: &str) -> anyhow::Result<String> {
    let abs = std::path::absolute(cwd.join(p)).with_context(|| p.to_string())?;
    // Canonicalise the deepest folder that exists (an output's folders may not exist yet),
    // then re-attach the rest.
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => bail!("{p}: no such folder"),
        }
    }
    let mut full =
        std::fs::canonicalize(existing).with_context(|| format!("{p}: cannot resolve"))?;
    full.extend(rest.iter().rev());
    let wd = std::fs::canonicalize(workdir).with_context(|| workdir.display().to_string())?;
    match full.strip_prefix(&wd) {
        Ok(rel) => Ok(rel.to_string_lossy().replace('\\', "/")),
        Err(_) => bail!(
            "{p}: outside the store's working directory {}",
            wd.display()
        ),
    }
}

/// A user's input path (relative to the current directory): working-directory relative when it
/// lies inside it, else its absolute path (an external input: hashed and recorded by path and
/// id, not copied).
pub(crate) fn input_path(workdir: &Path, cwd: &Path, p: &str) -> anyhow::Result<String> {
    let abs = std::path::absolute(cwd.join(p)).with_context(|| p.to_string())?;
    if !abs.exists() {
        // named inside: the stage says what is missing
        return workdir_relative(workdir, cwd, p);
    }
    let real = std::fs::canonicalize(&abs).with_context(|| format!("{p}: cannot resolve"))?;
    let wd = std::fs::canonicalize(workdir).with_context(|| workdir.display().to_string())?;
    if real.starts_with(&wd) {
        return workdir_relative(workdir, cwd, p);
    }
    Ok(abs.to_string_lossy().into_owned())
}

fn split_role<'a>(spec: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    match spec.split_once('=') {
        Some((r, v)) if !r.is_empty() && !v.is_empty() => Ok((r, v)),
        _ => bail!("--{what} {spec:?}: expected ROLE=VALUE"),
    }
}

/// Resolve `ROLE=REF` inputs: an existing path (relative to `cwd`) becomes working-directory
/// relative; anything else is passed on as a revision reference (`REV:path`).
pub(crate) fn parse_inputs(
    store: &Store,
    cwd: &Path,
    specs: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut inputs = Vec::new();
    for spec in specs {
        let (role, reference) = split_role(spec, "input")?;
        if !cwd.join(reference).exists() && reference.contains(':') {
            inputs.push((role.to_string(), reference.to_string()));
            continue;
        }
        let r = input_path(store.workdir(), cwd, reference)?;
        let folder = Path::new(&r).is_absolute() && Path::new(&r).is_dir();
        if folder {
            // an outside folder: one input per file
            let files = crate::stages::inputs::folder_inputs(role, Path::new(&r), &r)
                .with_context(|| r.clone())?;
            if files.is_empty() {
                bail!("--input {spec}: the folder holds no file");
            }
            inputs.extend(files);
        } else {
            inputs.push((role.to_string(), r));
        }
    }
    Ok(inputs)
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let workdir = store.workdir().to_path_buf();
    let mut stage = Stage::new(&args.stage, &args.stage_version);
    stage.inputs = parse_inputs(&store, &ctx.cwd, &args.inputs)?;
    for spec in &args.outputs {
        let (role, path) = match spec.split_once('=') {
            Some((r, p)) if !r.is_empty() => (r.to_string(), p),
            _ => (spec.clone(), spec.as_str()),
        };
        stage
            .outputs
            .push((role, workdir_relative(&workdir, &ctx.cwd, path)?));
    }
    let cwd_rel = match workdir_relative(&workdir, &ctx.cwd, ".")?.as_str() {
        "" | "." => ".".to_string(),
        other => other.trim_end_matches("/.").to_string(),
    };
    // files given as inputs or outputs are not "code": they are recorded by object id
    let skip: Vec<&str> = args
        .inputs
        .iter()
        .chain(&args.outputs)
        .map(|s| s.split_once('=').map(|(_, v)| v).unwrap_or(s))
        .collect();
    stage.params = external::params(&args.command, &args.env, &workdir, &cwd_rel, &skip);
    stage.replay = Some(external::REPLAY.to_string());
    stage.message = args.message.clone();
    stage.commit = !args.no_commit;
    stage.store_inputs = args.store_input;
    drop(store); // run_stage opens the store itself, and releases it while the command runs
    let err = &mut *ctx.err;
    let quiet = ctx.quiet;
    let outcome = run_stage(
        &workdir,
        &stage,
        &mut |p| {
            if !quiet {
                let _ = writeln!(err, "srlm run: {}", p.message);
            }
        },
        external::run_external,
    )
    .map_err(|e| match e {
        // a hook's rejection is a check that failed (exit 3), like in `srlm commit`
        RecordError::Commit(CommitError::Hook(h @ HookError::Rejected { .. })) => {
            anyhow::Error::new(super::CheckFailed(format!(
                "{h}\nthe outputs stay staged; nothing was committed"
            )))
        }
        e => e.into(),
    })?;
    if args.json {
        let v = serde_json::json!({
            "run": outcome.run.to_string(),
            "commit": outcome.commit.map(|c| c.to_string()),
            "record": outcome.record,
        });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        ctx.out,
        "run {} ({} v{})",
        outcome.run.short(),
        args.stage,
        args.stage_version
    )?;
    for (role, o) in &outcome.record.inputs {
        writeln!(ctx.out, "  input  {role}: {} {}", o.path, o.id.short())?;
    }
    for o in outcome.record.outputs.values() {
        writeln!(ctx.out, "  output {}: {}", o.path, o.id.short())?;
    }
    match outcome.commit {
        Some(c) => writeln!(ctx.out, "committed {}", c.short())?,
        None => writeln!(
            ctx.out,
            "staged; the run is attached by the next `srlm commit`"
        )?,
    }
    Ok(())
}
