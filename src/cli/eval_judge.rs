//! `srlm eval-judge`.
use srlm_store::Store;

use super::judge::JudgeArgs;
use super::server_args::ServerArgs;
use super::stage_util::{
    file_ref, model_or_server, print_outcome_with, run_stage_verb_unprinted, StageOpts,
};
use super::Ctx;
use crate::stages::model_io::with_server;

/// The judge against human rankings (the paper's Table 4): the model judges every response of
/// the EFT evaluation split, then, each with its count and a 95% interval:
/// pairwise accuracy (for every two responses to one prompt that humans rank differently, the
/// judge agrees when its scores order them the same way; judge ties and unparsed scores count
/// as disagreement; the paper reports 65.1% for its SFT baseline and 78.7 / 80.4 / 81.7% for
/// M1 / M2 / M3), 5-best (of the responses it scores 5, the share humans rank best), exact
/// match (prompts whose whole human order it reproduces), and Spearman's ρ and Kendall's τ-b
/// with the human ranking, per prompt, averaged. Recorded as the run's metrics; the
/// definitions, ties and unparsed scores included, are in the `eval_judge` module's docs.
///
/// Example: `srlm eval-judge --model M1:model --eval seed/eft_eval.jsonl`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The judging model (not with `--server`).
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub model: Option<String>,
    /// Evaluation rows (`prompt_id`, `prompt`, `response_id`, `response`, `quality_score`), as
    /// `srlm import oasst2` writes them.
    #[arg(long)]
    pub eval: String,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Output file (per-response scores).
    #[arg(long, default_value = "eval/judge_scores.jsonl")]
    pub out: String,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub opts: StageOpts,
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
    inputs.push(("eval".into(), file_ref(&store, &ctx.cwd, &args.eval)?));
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = args.judge.params();
    let json = args.opts.json;
    let outcome = run_stage_verb_unprinted(
        ctx,
        &args.opts,
        &crate::stages::registry::EVAL_JUDGE,
        inputs,
        vec![("scores".into(), out)],
        with_server(serde_json::to_value(&p)?, args.server.target()?.as_ref()),
        args.server.engine(),
    )?;
    let table = super::eval_table::reward_table(&outcome.record.metrics);
    print_outcome_with(ctx, json, &outcome, Some(table))
}
