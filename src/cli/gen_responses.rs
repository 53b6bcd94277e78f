//! `srlm gen-responses`.
use srlm_store::Store;

use super::server_args::ServerArgs;
use super::stage_util::{file_ref, model_or_server, run_stage_verb_on, StageOpts};
use super::Ctx;
use crate::engine::generate::SamplingParams;
use crate::stages::generate::GenResponsesParams;
use crate::stages::model_io::with_server;

/// Sample N candidate responses per prompt (default 4, T=0.7, top-p 0.9), seeded: the same
/// seed, inputs and thread count give byte-identical output in process; `--server URL` samples on
/// an OpenAI-compatible server instead (servers are often not bit-deterministic).
///
/// Example: `srlm gen-responses --model M1:model --prompts gen/prompts.jsonl --n 4`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model being iterated (not with `--server`).
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub model: Option<String>,
    /// Prompts: JSONL rows with a `prompt` (or `instruction`) and an optional `prompt_id`, as
    /// `srlm gen-prompts`, the Python replications and TRL write them.
    #[arg(long)]
    pub prompts: String,
    /// Candidates per prompt.
    #[arg(long, default_value_t = GenResponsesParams::default().n)]
    pub n: usize,
    #[arg(long, default_value_t = GenResponsesParams::default().sampling.temperature)]
    pub temperature: f64,
    #[arg(long, default_value_t = GenResponsesParams::default().sampling.top_p)]
    pub top_p: f64,
    #[arg(long, default_value_t = GenResponsesParams::default().sampling.max_tokens)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = GenResponsesParams::default().sampling.seed)]
    pub seed: u64,
    /// Output file.
    #[arg(long, default_value = "gen/responses.jsonl")]
    pub out: String,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub opts: StageOpts,
}

impl Args {
    /// The stage's parameters (flags not given keep the declared defaults).
    pub fn params(&self) -> GenResponsesParams {
        let d = GenResponsesParams::default();
        GenResponsesParams {
            n: self.n,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_p: self.top_p,
                max_tokens: self.max_tokens,
                seed: self.seed,
                ..d.sampling
            },
        }
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
    inputs.push(("prompts".into(), file_ref(&store, &ctx.cwd, &args.prompts)?));
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = args.params();
    run_stage_verb_on(
        ctx,
        &args.opts,
        &crate::stages::registry::GEN_RESPONSES,
        inputs,
        vec![("responses".into(), out)],
        with_server(serde_json::to_value(&p)?, args.server.target()?.as_ref()),
        args.server.engine(),
    )?;
    Ok(())
}
