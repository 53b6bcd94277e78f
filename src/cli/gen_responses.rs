//! `srlm gen-responses`.
use srlm_store::Store;

use super::stage_util::{file_ref, model_ref, run_stage_verb, StageOpts};
use super::Ctx;
use crate::engine::generate::SamplingParams;
use crate::stages::generate::{self, GenResponsesParams};

/// Sample N candidate responses per prompt (default 4, T=0.7, top-p 0.9), seeded: the same
/// seed, inputs and thread count give byte-identical output.
///
/// Example: `srlm gen-responses --model M1:model --prompts gen/prompts.jsonl --n 4`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model being iterated.
    #[arg(long)]
    pub model: String,
    /// Prompts (`prompt_id`, `prompt`), as `srlm gen-prompts` writes them.
    #[arg(long)]
    pub prompts: String,
    /// Candidates per prompt.
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file.
    #[arg(long, default_value = "gen/responses.jsonl")]
    pub out: String,
    #[command(flatten)]
    pub opts: StageOpts,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let mut inputs = model_ref(&store, &ctx.cwd, "model", &args.model)?;
    inputs.push(("prompts".into(), file_ref(&store, &ctx.cwd, &args.prompts)?));
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = GenResponsesParams {
        n: args.n,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            max_tokens: args.max_tokens,
            seed: args.seed,
            ..SamplingParams::default()
        },
    };
    run_stage_verb(
        ctx,
        &args.opts,
        generate::GEN_RESPONSES,
        inputs,
        vec![("responses".into(), out)],
        serde_json::to_value(&p)?,
        generate::gen_responses,
    )?;
    Ok(())
}
