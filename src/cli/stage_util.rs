//! What the stage verbs share: common flags, turning the user's references into stage inputs,
//! progress bars, and the report printed after a stage.
use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use srlm_store::Store;

use super::Ctx;
use crate::stages::decl::StageDecl;
use crate::stages::iterate::{Event, StageSummary};
use crate::stages::model_io::model_inputs;
use crate::stages::record::Outcome;

/// Flags every stage verb takes.
#[derive(Debug, clap::Args)]
pub struct StageOpts {
    /// Stage the outputs and keep the run pending for a later `srlm commit`.
    #[arg(long)]
    pub no_commit: bool,
    /// Commit message (default: the stage name).
    #[arg(short, long)]
    pub message: Option<String>,
    /// Run even when a committed run has the same stage, inputs and parameters (by default
    /// that run is reused and nothing is recomputed).
    #[arg(long)]
    pub rerun: bool,
    /// Tag the resulting commit (e.g. `M1`, `AIFT(M1)`).
    #[arg(long)]
    pub tag: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also copy inputs outside the working directory (e.g. a model in
    /// ~/.cache) into the store; by default they are hashed and recorded by path and id.
    #[arg(long)]
    pub store_input: bool,
}

/// A user's input reference: a path (relative to the current directory) inside the working
/// tree or outside it (an external input, by absolute path), or `REV:path`.
pub fn file_ref(store: &Store, cwd: &Path, r: &str) -> anyhow::Result<String> {
    if cwd.join(r).exists() || !r.contains(':') {
        super::run::input_path(store.workdir(), cwd, r)
    } else {
        Ok(r.to_string())
    }
}

/// The model inputs of a stage that may run on a server: none with `--server` (the model is
/// the server's), else the model reference as inputs for `role` (it is then required).
pub fn model_or_server(
    store: &Store,
    cwd: &Path,
    role: &str,
    model: Option<&str>,
    server: &super::server_args::ServerArgs,
) -> anyhow::Result<Vec<(String, String)>> {
    match (model, &server.server) {
        (_, Some(_)) => Ok(Vec::new()),
        (Some(m), None) => model_ref(store, cwd, role, m),
        (None, None) => anyhow::bail!("name a model (--model) or a server (--server URL)"),
    }
}

/// A user's model reference (a file or folder, in the working tree or at a revision) as stage
/// inputs for `role`.
pub fn model_ref(
    store: &Store,
    cwd: &Path,
    role: &str,
    r: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let r = file_ref(store, cwd, r)?;
    Ok(model_inputs(store, role, &r)?)
}

/// A progress bar on standard error (hidden with `--quiet`), driven by the loop's events.
pub struct Bars {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
        Bars { bar: None, quiet }
    }

    pub fn event(&mut self, e: Event) {
        if self.quiet {
            return;
        }
        match e {
            Event::StageStart { iteration, stage } => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>24} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
                    )
                    .expect("valid template"),
                );
                bar.set_prefix(match iteration {
                    0 => stage.to_string(),
                    t => format!("{stage} (it. {t})"),
                });
                self.bar = Some(bar);
            }
            Event::Progress(p) => {
                if let Some(b) = &self.bar {
                    if p.total > 0 {
                        b.set_length(p.total);
                    }
                    b.set_position(p.done);
                    b.set_message(p.message.to_string());
                }
            }
            Event::StageDone(s) => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                let how = if s.reused { "reused" } else { "done" };
                eprintln!(
                    "{:>24} {how} in {:.1}s{}",
                    match s.iteration {
                        0 => s.stage.clone(),
                        t => format!("{} (it. {t})", s.stage),
                    },
                    s.seconds,
                    s.commit
                        .as_deref()
                        .map(|c| format!(", commit {}", &c[..12.min(c.len())]))
                        .unwrap_or_default()
                );
            }
        }
    }
}

/// A bar still drawn when the stage fails is cleared, so the error is printed on a line of its
/// own instead of running into the bar's last message.
impl Drop for Bars {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Runs one stage verb: the stage through the wrapper, then the tag and the report.
pub fn run_stage_verb(
    ctx: &mut Ctx,
    opts: &StageOpts,
    decl: &'static StageDecl,
    inputs: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    params: Value,
) -> anyhow::Result<Outcome> {
    let engine = Value::Object(Default::default());
    run_stage_verb_on(ctx, opts, decl, inputs, outputs, params, engine)
}

/// [`run_stage_verb`] with the engine choices the caller asks for (a server client's options).
pub fn run_stage_verb_on(
    ctx: &mut Ctx,
    opts: &StageOpts,
    decl: &'static StageDecl,
    inputs: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    params: Value,
    engine: Value,
) -> anyhow::Result<Outcome> {
    let json = opts.json;
    let outcome = run_stage_verb_unprinted(ctx, opts, decl, inputs, outputs, params, engine)?;
    print_outcome(ctx, json, &outcome)?;
    Ok(outcome)
}

/// [`run_stage_verb_on`] without the report: for a verb that prints its own (a table of its
/// metrics, [`print_outcome_with`]).
pub fn run_stage_verb_unprinted(
    ctx: &mut Ctx,
    opts: &StageOpts,
    decl: &'static StageDecl,
    inputs: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    params: Value,
    engine: Value,
) -> anyhow::Result<Outcome> {
    decl.check(&inputs, &outputs)?;
    let name_version = (decl.name, decl.version);
    let workdir = Store::discover(&ctx.cwd)?.workdir().to_path_buf();
    let mut stage = decl.stage().params(params).engine(engine);
    stage.inputs = inputs;
    stage.outputs = outputs;
    stage.commit = !opts.no_commit;
    stage.reuse = !opts.rerun;
    stage.store_inputs = opts.store_input;
    stage.message = opts.message.clone();
    let mut bars = Bars::new(ctx.quiet);
    bars.event(Event::StageStart {
        iteration: 0,
        stage: name_version.0,
    });
    let t0 = std::time::Instant::now();
    let outcome = crate::stages::record::run_stage(
        &workdir,
        &stage,
        &mut |p| bars.event(Event::Progress(p)),
        decl.run,
    )
    // on an error `bars` drops here, clearing its line before the error is printed
    .with_context(|| format!("stage {}", name_version.0))?;
    let summary = StageSummary {
        iteration: 0,
        stage: name_version.0.to_string(),
        commit: outcome.commit.map(|c| c.to_string()),
        reused: outcome.reused,
        seconds: t0.elapsed().as_secs_f64(),
        metrics: outcome.record.metrics.clone(),
    };
    bars.event(Event::StageDone(&summary));
    if let (Some(tag), Some(c)) = (&opts.tag, outcome.commit) {
        Store::open(&workdir)?.set_tag(tag, &c, true)?;
    }
    Ok(outcome)
}

/// The report after a stage: run, outputs, metrics, commit (or JSON).
pub fn print_outcome(ctx: &mut Ctx, json: bool, o: &Outcome) -> anyhow::Result<()> {
    print_outcome_with(ctx, json, o, None)
}

/// [`print_outcome`] with the stage's main metrics as a table: `table` is the rendered table
/// and the metric keys it shows, which are then not listed again.
pub fn print_outcome_with(
    ctx: &mut Ctx,
    json: bool,
    o: &Outcome,
    table: Option<(String, Vec<String>)>,
) -> anyhow::Result<()> {
    if json {
        let v = serde_json::json!({
            "run": o.run.to_string(),
            "commit": o.commit.map(|c| c.to_string()),
            "reused": o.reused,
            "record": o.record,
        });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let r = &o.record;
    writeln!(
        ctx.out,
        "run {} ({} v{}){}",
        o.run.short(),
        r.stage.name,
        r.stage.version,
        if o.reused {
            ", reused: a committed run had the same inputs and parameters"
        } else {
            ""
        }
    )?;
    for (role, x) in &r.outputs {
        writeln!(ctx.out, "  output {role}: {} {}", x.path, x.id.short())?;
    }
    let shown: &[String] = match &table {
        Some((text, keys)) => {
            writeln!(ctx.out, "{}", text.trim_end())?;
            keys
        }
        None => &[],
    };
    for (k, v) in r.metrics.iter().filter(|(k, _)| !shown.contains(k)) {
        match v.as_array() {
            // per-step figures: `srlm report` plots them, `--json` prints them
            Some(a) => writeln!(ctx.out, "  {k}: {} entries", a.len())?,
            None => writeln!(ctx.out, "  {k}: {v}")?,
        }
    }
    match o.commit {
        Some(c) => writeln!(ctx.out, "committed {}", c.short())?,
        None => writeln!(
            ctx.out,
            "staged; the run is attached by the next `srlm commit`"
        )?,
    }
    Ok(())
}
