//! `srlm bench loop`: one whole self-rewarding iteration at a chosen size in a fresh store
//! (M0 committed, M1 by a short SFT on the built-in seed set, then gen-prompts, gen-responses,
//! judge, pairs and DPO on every pair), through the real stages, printing per stage its seconds,
//! tokens per second and peak memory.
use std::path::PathBuf;
use std::time::Instant;

use comfy_table::Table;
use serde::Serialize;
use serde_json::Value;

use super::bench_util::{peak_rss_mb, reset_peak_rss};
use super::stage_util::Bars;
use super::Ctx;
use crate::stages::demo::{demo, toy_params};
use crate::stages::iterate::Event;
use crate::stages::judge::JudgeMethod;
use crate::stages::record::Metrics;

/// One self-rewarding iteration at real size, timed stage by stage: per stage seconds, tokens
/// generated per second and peak resident memory. The paper's size is `--prompts 400 --n 4
/// --samples 3`; small sizes check the set-up in minutes.
///
/// Example: `srlm bench loop --prompts 400 --n 4 --samples 3`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// New prompts generated (and answered) in the iteration.
    #[arg(long, default_value_t = 400)]
    pub prompts: usize,
    /// Candidate responses per prompt.
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    /// Judgements sampled per response (with `--method sample`).
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// `sample` (the paper's: generated justification + score) or `digits` (one pass).
    #[arg(long, value_enum, default_value_t = JudgeMethod::Sample)]
    pub method: JudgeMethod,
    /// Tokens per response at most.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Where to create the store (default: a new temporary folder, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The base model (default: `$SRLM_MODEL`, else the documented default location).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One stage's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StageFigures {
    pub stage: String,
    pub seconds: f64,
    /// Tokens the stage generated (none for training and pairs).
    pub generated_tokens: Option<u64>,
    pub tokens_per_s: Option<f64>,
    /// Peak resident memory while the stage ran (MB).
    pub peak_mb: Option<f64>,
    /// The figures that say what the stage worked on.
    pub detail: String,
}

/// The whole bench.
#[derive(Debug, Clone, Serialize)]
pub struct LoopBench {
    pub prompts: usize,
    pub n: usize,
    pub samples: usize,
    pub method: JudgeMethod,
    pub max_tokens: usize,
    pub threads: usize,
    pub stages: Vec<StageFigures>,
    /// Seconds of the iteration itself (gen-prompts to dpo), the set-up (M0, seed, SFT) aside.
    pub iteration_seconds: f64,
    pub total_seconds: f64,
    /// Why the loop stopped early, if it did.
    pub error: Option<String>,
}

fn num(m: &Metrics, k: &str) -> Option<u64> {
    m.get(k).and_then(Value::as_u64)
}

/// What a stage's metrics say it worked on, in a few words.
fn detail(stage: &str, m: &Metrics) -> String {
    let get = |k: &str| num(m, k).map(|v| v.to_string()).unwrap_or("?".into());
    match stage {
        "gen-prompts" => format!(
            "{} prompts kept of {} attempts",
            get("kept"),
            get("attempts")
        ),
        "gen-responses" => format!("{} responses", get("responses")),
        "judge" => format!(
            "{} responses, {} unparsed",
            get("responses"),
            get("unparsed")
        ),
        "pairs" => format!("{} pairs, {} ties", get("pairs"), get("ties")),
        "sft" | "dpo" => format!(
            "{} steps, {} examples, {} tokens",
            get("steps"),
            get("examples"),
            get("tokens")
        ),
        _ => String::new(),
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let model = crate::engine::model::resolve_model(args.model.as_deref())?;
    let tmp;
    let dir = match &args.dir {
        Some(d) => ctx.cwd.join(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().join("store")
        }
    };
    let mut params = toy_params();
    params.iterations = 1;
    let lp = &mut params.loop_params;
    lp.gen_prompts.count = args.prompts;
    lp.gen_responses.n = args.n;
    lp.gen_responses.sampling.max_tokens = args.max_tokens;
    lp.judge.method = args.method;
    lp.judge.judge.samples = samples(&args);
    // every pair, once: one optimizer step per 4 pairs
    lp.dpo.train.epochs = 1;

    let mut stages: Vec<StageFigures> = Vec::new();
    let mut started = Instant::now();
    let mut bars = Bars::new(ctx.quiet || args.json);
    let t0 = Instant::now();
    let result = demo(&dir, &model, &params, &mut |e| {
        match &e {
            Event::StageStart { .. } => {
                reset_peak_rss();
                started = Instant::now();
            }
            Event::StageDone(s) => {
                let secs = started.elapsed().as_secs_f64();
                let tokens = num(&s.metrics, "generated_tokens")
                    .or_else(|| num(&s.metrics, "completion_tokens"));
                stages.push(StageFigures {
                    stage: s.stage.clone(),
                    seconds: secs,
                    generated_tokens: tokens,
                    tokens_per_s: tokens.map(|t| t as f64 / secs.max(1e-9)),
                    peak_mb: peak_rss_mb(),
                    detail: detail(&s.stage, &s.metrics),
                });
            }
            Event::Progress(_) => {}
        }
        bars.event(e)
    });
    drop(bars);
    let total_seconds = t0.elapsed().as_secs_f64();
    let setup = ["seed", "sft"];
    let report = LoopBench {
        prompts: args.prompts,
        n: args.n,
        samples: samples(&args),
        method: args.method,
        max_tokens: args.max_tokens,
        threads: rayon::current_num_threads(),
        iteration_seconds: stages
            .iter()
            .filter(|s| !setup.contains(&s.stage.as_str()))
            .map(|s| s.seconds)
            .sum(),
        stages,
        total_seconds,
        error: result.as_ref().err().map(|e| e.to_string()),
    };
    print(ctx, &report, args.json)?;
    if let Err(e) = result {
        return Err(anyhow::Error::new(e).context("the loop stopped early"));
    }
    Ok(())
}

/// Judgements per response: the digit judge takes one pass, whatever `--samples` says.
fn samples(args: &Args) -> usize {
    match args.method {
        JudgeMethod::Sample => args.samples,
        JudgeMethod::Digits => 1,
    }
}

fn print(ctx: &mut Ctx, r: &LoopBench, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(r)?)?;
        return Ok(());
    }
    writeln!(
        ctx.out,
        "one iteration: {} prompts x {} candidates, judge {:?} x {}, max {} tokens, {} threads",
        r.prompts, r.n, r.method, r.samples, r.max_tokens, r.threads
    )?;
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "stage", "seconds", "tokens", "tokens/s", "peak MB", "what",
    ]);
    let opt = |v: Option<f64>, prec: usize| v.map(|v| format!("{v:.prec$}")).unwrap_or_default();
    for s in &r.stages {
        t.add_row(vec![
            s.stage.clone(),
            format!("{:.1}", s.seconds),
            s.generated_tokens
                .map(|v| v.to_string())
                .unwrap_or_default(),
            opt(s.tokens_per_s, 1),
            opt(s.peak_mb, 0),
            s.detail.clone(),
        ]);
    }
    writeln!(ctx.out, "{t}")?;
    writeln!(
        ctx.out,
        "iteration (gen-prompts .. dpo): {:.1} s = {:.1} min; with set-up: {:.1} s",
        r.iteration_seconds,
        r.iteration_seconds / 60.0,
        r.total_seconds
    )?;
    Ok(())
}
