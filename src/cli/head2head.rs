//! `srlm head2head`.
use srlm_store::Store;

use super::judge::JudgeArgs;
use super::server_args::ServerArgs;
use super::stage_util::{
    file_ref, model_or_server, model_ref, print_outcome_with, run_stage_verb_unprinted, StageOpts,
};
use super::Ctx;
use crate::engine::generate::SamplingParams;
use crate::stages::head2head::Head2HeadParams;
use crate::stages::model_io::with_server;

/// Instruction following head to head (the paper's Table 1): models A and B each answer the
/// first N distinct prompts once, with the same sampling and seed, in process; a fixed judge
/// (a model you name, or `--server`) scores every response with the paper's 5-point prompt;
/// A wins a prompt when its score is higher, loses when lower, ties when equal. Prints win /
/// tie / loss with Wilson 95% intervals; a prompt whose score did not parse is unjudged and
/// left out of the shares. The per-prompt responses, scores and judgements are the output.
///
/// Example: `srlm head2head --a M2:model --b M1:model --judge M0:base/model.gguf --prompts seed/eft_eval.jsonl`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model A (M(t+1)).
    #[arg(long)]
    pub a: String,
    /// Model B (M(t)).
    #[arg(long)]
    pub b: String,
    /// The fixed judge (not with `--server`): keep it the same across comparisons.
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub judge: Option<String>,
    /// Held-out prompts: JSONL rows with a `prompt` (or `instruction`), e.g. the EFT
    /// evaluation split; rows repeating a prompt count once.
    #[arg(long)]
    pub prompts: String,
    /// Compare on the first this many distinct prompts.
    #[arg(long, default_value_t = 100)]
    pub n_prompts: usize,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// Tokens per response at most.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// The sampling seed, the same for both models.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub judging: JudgeArgs,
    /// Output file (per-prompt responses, scores and outcome).
    #[arg(long, default_value = "eval/head2head.jsonl")]
    pub out: String,
    /// Judge on a server (the models compared always run in process).
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub opts: StageOpts,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let mut inputs = model_ref(&store, &ctx.cwd, "a", &args.a)?;
    inputs.extend(model_ref(&store, &ctx.cwd, "b", &args.b)?);
    inputs.extend(model_or_server(
        &store,
        &ctx.cwd,
        "judge",
        args.judge.as_deref(),
        &args.server,
    )?);
    inputs.push(("prompts".into(), file_ref(&store, &ctx.cwd, &args.prompts)?));
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = Head2HeadParams {
        n_prompts: args.n_prompts,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            max_tokens: args.max_tokens,
            seed: args.seed,
            ..SamplingParams::default()
        },
        judge: args.judging.params(),
    };
    let json = args.opts.json;
    let outcome = run_stage_verb_unprinted(
        ctx,
        &args.opts,
        &crate::stages::registry::HEAD2HEAD,
        inputs,
        vec![("verdicts".into(), out)],
        with_server(serde_json::to_value(&p)?, args.server.target()?.as_ref()),
        args.server.engine(),
    )?;
    let table = super::eval_table::head2head_table(&outcome.record.metrics);
    print_outcome_with(ctx, json, &outcome, Some(table))
}
