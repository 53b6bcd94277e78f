//! `srlm eval-judge`.
use srlm_store::Store;

use super::judge::JudgeArgs;
use super::stage_util::{file_ref, model_ref, run_stage_verb, StageOpts};
use super::Ctx;
use crate::stages::judge as judge_stage;

/// Judge accuracy against human rankings: the model judges every response of the EFT
/// evaluation split, and for every two responses to the same prompt that humans rank
/// differently the judge agrees when its scores order them the same way (ties and unparsed
/// scores count as disagreement). The paper reports 65.1% for its SFT baseline and
/// 78.7 / 80.4 / 81.7% for M1 / M2 / M3. Recorded as the run's metrics.
///
/// Example: `srlm eval-judge --model M1:model --eval seed/eft_eval.jsonl`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The judging model.
    #[arg(long)]
    pub model: String,
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
    pub opts: StageOpts,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let mut inputs = model_ref(&store, &ctx.cwd, "model", &args.model)?;
    inputs.push(("eval".into(), file_ref(&store, &ctx.cwd, &args.eval)?));
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = args.judge.params();
    run_stage_verb(
        ctx,
        &args.opts,
        judge_stage::EVAL_JUDGE,
        inputs,
        vec![("scores".into(), out)],
        serde_json::to_value(&p)?,
        judge_stage::eval_judge,
    )?;
    Ok(())
}
