//! `srlm iterate`.

use anyhow::Context;
use comfy_table::Table;
use srlm_store::Store;

use super::judge::JudgeArgs;
use super::stage_util::Bars;
use super::Ctx;
use crate::backend::server::{ServerOptions, ServerTarget};
use crate::stages::iterate::{self, LoopParams, StageSummary};

/// Run the self-rewarding loop: per iteration t, gen-prompts → gen-responses → judge → pairs →
/// dpo, each recorded and committed, tagging `AIFT(Mt)` (the pairs) and `M(t+1)` (the model).
/// Killed at any point, running it again resumes: a stage whose inputs and parameters match a
/// committed run is not run again. Ends with a summary table.
///
/// Example: `srlm iterate --from M1 --iterations 2`, or with generation and judging on a
/// server: `srlm iterate --from M1 --iterations 1 --server http://127.0.0.1:8080/v1`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model tag to start from (`M1`, … : the loop starts at that iteration).
    #[arg(long, default_value = "M1")]
    pub from: String,
    /// Iterations to run (the paper ran 2: M1 → M2 → M3).
    #[arg(long, default_value_t = 2)]
    pub iterations: usize,
    /// New prompts per iteration.
    #[arg(long, default_value_t = LoopParams::default().gen_prompts.count)]
    pub prompts: usize,
    /// Few-shot examples per prompt-generation request (paper: 8).
    #[arg(long, default_value_t = LoopParams::default().gen_prompts.shots)]
    pub shots: usize,
    /// Candidate responses per prompt.
    #[arg(long, default_value_t = LoopParams::default().gen_responses.n)]
    pub n: usize,
    /// Tokens per response at most.
    #[arg(long, default_value_t = LoopParams::default().gen_responses.sampling.max_tokens)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Judge with this model instead of the model being iterated (a fixed or stronger judge;
    /// recorded in provenance as the judge stage's input), e.g. `M0:base/model.gguf`.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// DPO's β.
    #[arg(long, default_value_t = LoopParams::default().dpo.beta)]
    pub beta: f64,
    #[arg(long, default_value_t = LoopParams::default().dpo.train.lr)]
    pub lr: f64,
    /// Base seed (each iteration offsets it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generate prompts and responses on this OpenAI-compatible server (base URL ending in
    /// `/v1`); DPO still trains in process, so the server should serve the model being iterated.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    #[arg(long, value_name = "NAME", requires = "server")]
    pub server_model: Option<String>,
    /// Judge on this server (default: in process, or on `--server` when the judge is the
    /// policy and no `--judge-model` is given).
    #[arg(long, value_name = "URL")]
    pub judge_server: Option<String>,
    #[arg(long, value_name = "NAME", requires = "judge_server")]
    pub judge_server_model: Option<String>,
    /// Requests in flight at once, per server.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds one request may take.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub timeout: f64,
    /// Retries on connection errors, 429 and 5xx.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// The stages' parameters from the flags (flags not given keep the declared defaults);
    /// the judge model and servers are set by the caller.
    pub fn stage_params(&self) -> LoopParams {
        let mut p = LoopParams::default();
        p.gen_prompts.count = self.prompts;
        p.gen_prompts.shots = self.shots;
        p.gen_prompts.seed = self.seed;
        p.gen_responses.n = self.n;
        p.gen_responses.sampling.max_tokens = self.max_tokens;
        p.gen_responses.sampling.seed = self.seed;
        p.judge = self.judge.params();
        p.dpo.beta = self.beta;
        p.dpo.train.lr = self.lr;
        p.dpo.train.seed = self.seed;
        p
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let from: usize = args
        .from
        .strip_prefix('M')
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("--from {}: expected a model tag M<number>", args.from))?;
    let store = Store::discover(&ctx.cwd)?;
    let workdir = store.workdir().to_path_buf();
    let judge_model = args
        .judge_model
        .as_deref()
        .map(|r| super::stage_util::file_ref(&store, &ctx.cwd, r))
        .transpose()?;
    drop(store);
    let mut p = args.stage_params();
    p.judge_model = judge_model;
    p.policy_server = args
        .server
        .as_deref()
        .map(|u| ServerTarget::new(u, args.server_model.clone()))
        .transpose()?;
    p.judge_server = match (&args.judge_server, &p.judge_model) {
        (Some(u), _) => Some(ServerTarget::new(u, args.judge_server_model.clone())?),
        (None, None) => p.policy_server.clone(),
        (None, Some(_)) => None,
    };
    p.server_client = ServerOptions {
        concurrency: args.concurrency.max(1),
        timeout_s: args.timeout,
        retries: args.retries,
        ..ServerOptions::default()
    };
    let mut bars = Bars::new(ctx.quiet);
    let summary = iterate::iterate(&workdir, from, args.iterations, &p, &mut |e| bars.event(e))?;
    print_summary(ctx, &summary, args.json)
}

/// The table printed after a loop: one row per stage.
pub fn print_summary(ctx: &mut Ctx, summary: &[StageSummary], json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(summary)?)?;
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec!["it.", "stage", "commit", "time", "key figures"]);
    for s in summary {
        t.add_row(vec![
            if s.iteration == 0 {
                "-".to_string()
            } else {
                s.iteration.to_string()
            },
            s.stage.clone(),
            s.commit
                .as_deref()
                .map(|c| c[..12.min(c.len())].to_string())
                .unwrap_or_default(),
            if s.reused {
                "reused".to_string()
            } else {
                format!("{:.1}s", s.seconds)
            },
            crate::runs::key_figures(&s.stage, &s.metrics),
        ]);
    }
    writeln!(ctx.out, "{t}")?;
    Ok(())
}
