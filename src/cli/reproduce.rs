//! `srlm reproduce`.

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use srlm_store::Store;

use super::{CheckFailed, Ctx};
use crate::lineage::start_objects;
use crate::stages::reproduce::{default_registry, replay_runs, upstream_runs};

/// Replay every run upstream of TARGET (or only the last N) in scratch directories, from the
/// recorded input objects and parameters, and compare each output's id with the recorded one.
/// Prints a table stage | output | recorded | reproduced | identical? and, where an output
/// differs, how many dataset rows or which tensors (with the largest absolute difference).
/// Exit status 0 only if every output is identical; 3 if any differs or a run could not be
/// replayed (the reason is shown: a missing input object, a command that no longer exists, a
/// stage without a replay function, an external input that changed and was not stored).
/// A run of `srlm run` recorded in a git repository is replayed in a temporary checkout of its
/// commit with the recorded patch applied; scripts changed since the run are listed, as is an
/// srlm version other than the one that recorded the run. TARGET is REV[:PATH] or a
/// working-tree path.
///
/// Example: `srlm reproduce M3:model.safetensors --last 2`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// REV[:PATH] (or a path, meaning HEAD:PATH) whose upstream runs to replay.
    pub target: String,
    /// Replay only the last N runs before the target.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Replay with a parameter changed: STAGE.KEY=VALUE (KEY may be dotted into nested
    /// parameters; VALUE is JSON, or else a string), e.g. `--set dpo.beta=0.2`. Shows which
    /// outputs depend on it: the first stage that no longer reproduces is named.
    #[arg(long = "set", value_name = "STAGE.KEY=VALUE")]
    pub set: Vec<String>,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Applies `--set STAGE.KEY=VALUE` to the parameters of every run of STAGE.
fn apply_sets(
    runs: &mut [(srlm_store::RunId, crate::provenance::RunRecord)],
    sets: &[String],
) -> anyhow::Result<()> {
    for spec in sets {
        let (path, value) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {spec:?}: expected STAGE.KEY=VALUE"))?;
        let (stage, key) = path
            .split_once('.')
            .ok_or_else(|| anyhow::anyhow!("--set {spec:?}: expected STAGE.KEY=VALUE"))?;
        let value: serde_json::Value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        let mut hit = false;
        for (_, r) in runs.iter_mut().filter(|(_, r)| r.stage.name == stage) {
            let mut cur = &mut r.params;
            for part in key.split('.') {
                let obj = cur.as_object_mut().ok_or_else(|| {
                    anyhow::anyhow!("--set {spec:?}: parameter `{part}` is not inside an object")
                })?;
                cur = obj
                    .entry(part.to_string())
                    .or_insert(serde_json::Value::Null);
            }
            *cur = value.clone();
            hit = true;
        }
        if !hit {
            anyhow::bail!("--set {spec:?}: no run of stage `{stage}` is upstream of the target");
        }
    }
    Ok(())
}

/// Rows under a run's outputs for what may explain a difference: the srlm version that
/// recorded it, scripts changed since, external inputs that changed.
fn add_note_rows(t: &mut Table, c: &crate::stages::reproduce::RunCheck) {
    let short = |h: &str| h[..12.min(h.len())].to_string();
    if let Some(v) = &c.srlm_recorded {
        t.add_row([
            c.stage.clone(),
            "srlm version".into(),
            v.clone(),
            env!("CARGO_PKG_VERSION").to_string(),
            "differs".into(),
        ]);
    }
    for x in c.scripts.iter().filter(|x| x.changed_since()) {
        t.add_row([
            c.stage.clone(),
            format!("script {}", x.path),
            short(&x.recorded),
            x.now.as_deref().map(short).unwrap_or_else(|| "gone".into()),
            "changed since".into(),
        ]);
    }
    for x in c
        .external
        .iter()
        .filter(|x| x.state != crate::stages::reproduce::ExternalState::Unchanged)
    {
        let now = match &x.state {
            crate::stages::reproduce::ExternalState::Changed(id) => id.short(),
            _ => "gone".into(),
        };
        t.add_row([
            c.stage.clone(),
            format!("external {}", x.path),
            x.recorded.short(),
            now,
            "changed since".into(),
        ]);
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let start = start_objects(&store, &ctx.cwd, &args.target)?;
    let mut runs = upstream_runs(&store, start, args.last)?;
    apply_sets(&mut runs, &args.set)?;
    // a lazy clone fetches the recorded inputs and outputs the replays read
    let files: Vec<srlm_store::ManifestId> = runs
        .iter()
        .flat_map(|(_, r)| r.inputs.values().chain(r.outputs.values()))
        .map(|o| srlm_store::ManifestId(o.id))
        .collect();
    super::lazy::hydrate_files(&store, &files)?;
    if runs.is_empty() {
        anyhow::bail!(
            "{}: no recorded run produced it, so there is nothing to reproduce",
            args.target
        );
    }
    let workdir = store.workdir().to_path_buf();
    drop(store);
    let registry = default_registry();
    let err = &mut *ctx.err;
    let quiet = ctx.quiet;
    let checks = replay_runs(&workdir, &runs, &registry, &mut |p| {
        if !quiet && p.total > 0 {
            let _ = writeln!(err, "{}", p.message);
        }
    })?;
    if args.json {
        let v: Vec<_> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "run": c.run.to_string(), "stage": c.stage, "refused": c.refused, "failed": c.failed,
                    "backend": if c.server.is_some() { "server" } else { "in-process" }, "server": c.server,
                    "outputs": c.outputs.iter().map(|o| serde_json::json!({
                        "role": o.role, "path": o.path, "recorded": o.recorded.to_string(),
                        "reproduced": o.reproduced.map(|r| r.to_string()), "identical": o.identical(),
                        "detail": o.detail,
                    })).collect::<Vec<_>>(),
                    "srlm_recorded": c.srlm_recorded, "code": c.code,
                    "scripts": c.scripts.iter().map(|x| serde_json::json!({
                        "path": x.path, "recorded": x.recorded, "now": x.now, "replayed": x.replayed,
                        "changed_since_run": x.changed_since(),
                    })).collect::<Vec<_>>(),
                    "external_inputs": c.external.iter().map(|x| serde_json::json!({
                        "role": x.role, "path": x.path, "recorded": x.recorded.to_string(),
                        "state": x.state.describe(), "replayed_from_store": x.from_store,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Dynamic)
            .set_header(["stage", "output", "recorded", "reproduced", "identical?"]);
        for c in &checks {
            if c.refused.is_some() || c.failed.is_some() {
                let what = if c.refused.is_some() {
                    "refused"
                } else {
                    "failed"
                };
                t.add_row([
                    c.stage.clone(),
                    "-".into(),
                    "-".into(),
                    format!("{what} (see below)"),
                    "NO".into(),
                ]);
            }
            for o in &c.outputs {
                let reproduced = o
                    .reproduced
                    .map(|r| r.short())
                    .unwrap_or_else(|| "missing".into());
                t.add_row([
                    c.stage.clone(),
                    o.path.clone(),
                    o.recorded.short(),
                    reproduced,
                    if o.identical() {
                        "yes".into()
                    } else {
                        "NO".into()
                    },
                ]);
            }
        }
        for c in &checks {
            add_note_rows(&mut t, c);
        }
        writeln!(ctx.out, "{t}")?;
        for c in &checks {
            if let Some(code) = &c.code {
                writeln!(
                    ctx.out,
                    "{} (run {}) replayed with {code}",
                    c.stage,
                    c.run.short()
                )?;
            }
            for x in c.scripts.iter().filter(|x| x.changed_since()) {
                let how = if x.replayed_other() {
                    "and the replay could not use the recorded version"
                } else {
                    "the replay used the recorded version"
                };
                let now = if x.now.is_some() { "changed" } else { "gone" };
                writeln!(
                    ctx.out,
                    "{} (run {}): script {} {now} since the run; {how}",
                    c.stage,
                    c.run.short(),
                    x.path
                )?;
            }
            for x in &c.external {
                let how = if x.from_store {
                    "; replayed from the copy stored with the run"
                } else {
                    ""
                };
                writeln!(
                    ctx.out,
                    "{} (run {}): external input {} {}: {}{how}",
                    c.stage,
                    c.run.short(),
                    x.role,
                    x.path,
                    x.state.describe()
                )?;
            }
            if let Some(url) = &c.server {
                let differ = c.outputs.iter().filter(|o| !o.identical()).count();
                writeln!(
                    ctx.out,
                    "{} (run {}) replayed on the server {url}: {differ} output(s) differ; \
                     servers are often not bit-deterministic",
                    c.stage,
                    c.run.short()
                )?;
            }
            if let Some(r) = &c.refused {
                writeln!(ctx.out, "{} (run {}) refused: {r}", c.stage, c.run.short())?;
            }
            if let Some(f) = &c.failed {
                writeln!(ctx.out, "{} (run {}) failed: {f}", c.stage, c.run.short())?;
            }
            for o in c.outputs.iter().filter(|o| !o.identical()) {
                if let Some(d) = &o.detail {
                    writeln!(ctx.out, "{} {}: {d}", c.stage, o.path)?;
                }
            }
        }
    }
    let bad = checks.iter().filter(|c| !c.ok()).count();
    if let Some(first) = checks.iter().find(|c| !c.ok()) {
        if !args.json {
            writeln!(
                ctx.out,
                "first diverging stage: {} (run {})",
                first.stage,
                first.run.short()
            )?;
        }
    }
    if bad > 0 {
        return Err(CheckFailed(format!(
            "{bad} of {} run(s) did not reproduce",
            checks.len()
        ))
        .into());
    }
    if !args.json {
        writeln!(
            ctx.out,
            "all {} run(s) reproduced identically",
            checks.len()
        )?;
    }
    Ok(())
}
