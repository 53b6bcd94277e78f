//! `srlm judge`.
use srlm_store::Store;

use super::server_args::ServerArgs;
use super::stage_util::{file_ref, model_or_server, run_stage_verb_on, StageOpts};
use super::Ctx;
use crate::stages::judge::{JudgeMethod, JudgeStageParams};
use crate::stages::model_io::with_server;

/// LLM-as-a-Judge: score every candidate with the paper's additive 5-point prompt, k samples
/// per response averaged (unparsed samples are null, never a number), raw judgements kept.
/// The judge is the model being iterated, as in the paper; name any other model to use a fixed
/// or stronger judge (recorded in provenance). `--method digits` scores in one forward pass
/// from the next-token distribution over 0–5 after "Score: " (on a server: at the digit after
/// the judgement's own "Score:", from the reply's log-probs).
///
/// Example: `srlm judge --model M1:model --responses gen/responses.jsonl --samples 3`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The judging model (not with `--server`).
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub model: Option<String>,
    /// Candidate responses (as `srlm gen-responses` writes them).
    #[arg(long)]
    pub responses: String,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Output file.
    #[arg(long, default_value = "gen/judgements.jsonl")]
    pub out: String,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub opts: StageOpts,
}

/// Judging flags shared by `judge`, `eval-judge` and `iterate`.
#[derive(Debug, Clone, clap::Args)]
pub struct JudgeArgs {
    /// Judgements sampled per response (paper: 3).
    #[arg(long, default_value_t = JudgeStageParams::default().judge.samples)]
    pub samples: usize,
    /// `sample` (generated justification + Score) or `digits` (one-pass expected score).
    #[arg(long, value_enum, default_value_t = JudgeStageParams::default().method)]
    pub method: JudgeMethod,
    /// Tokens per judgement at most.
    #[arg(long, default_value_t = JudgeStageParams::default().judge.sampling.max_tokens)]
    pub judge_max_tokens: usize,
    #[arg(long, default_value_t = JudgeStageParams::default().judge.sampling.temperature)]
    pub judge_temperature: f64,
    #[arg(long, default_value_t = JudgeStageParams::default().judge.sampling.seed)]
    pub judge_seed: u64,
}

impl JudgeArgs {
    pub fn params(&self) -> JudgeStageParams {
        let mut p = JudgeStageParams::default();
        p.judge.samples = self.samples;
        p.judge.sampling.max_tokens = self.judge_max_tokens;
        p.judge.sampling.temperature = self.judge_temperature;
        p.judge.sampling.seed = self.judge_seed;
        p.method = self.method;
        p
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let mut inputs = model_or_server(
        &store,
        &ctx.cwd,
        "model",
        args.model.as_deref(),
        &args.server,
    )?;
    inputs.push((
        "responses".into(),
        file_ref(&store, &ctx.cwd, &args.responses)?,
    ));
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = args.judge.params();
    run_stage_verb_on(
        ctx,
        &args.opts,
        &crate::stages::registry::JUDGE,
        inputs,
        vec![("judgements".into(), out)],
        with_server(serde_json::to_value(&p)?, args.server.target()?.as_ref()),
        args.server.engine(),
    )?;
    Ok(())
}
