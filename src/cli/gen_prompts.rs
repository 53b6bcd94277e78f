//! `srlm gen-prompts`.
use srlm_store::Store;

use super::server_args::ServerArgs;
use super::stage_util::{file_ref, model_or_server, run_stage_verb_on, StageOpts};
use super::Ctx;
use crate::stages::gen_prompts::GenPromptsParams;
use crate::stages::model_io::with_server;

/// Few-shot self-instruction: the model sees 8 examples drawn from the seed prompts and writes
/// a new prompt (T=0.6, top-p 0.9). Candidates are cleaned, length-filtered, de-duplicated and
/// dropped when they nearly duplicate a seed or an earlier prompt (ROUGE-L ≥ 0.7).
///
/// Example: `srlm gen-prompts --model M1:model --seeds seed/ift.jsonl --count 100`, or on a
/// server: `srlm gen-prompts --server http://127.0.0.1:8080/v1 --seeds seed/ift.jsonl`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model being iterated (not with `--server`).
    #[arg(long, required_unless_present = "server", conflicts_with = "server")]
    pub model: Option<String>,
    /// Seed prompts (any JSONL with `prompt` or `instruction`).
    #[arg(long)]
    pub seeds: String,
    /// How many prompts to keep.
    #[arg(long, default_value_t = GenPromptsParams::default().count)]
    pub count: usize,
    /// Few-shot examples per request.
    #[arg(long, default_value_t = GenPromptsParams::default().shots)]
    pub shots: usize,
    #[arg(long, default_value_t = GenPromptsParams::default().temperature)]
    pub temperature: f64,
    #[arg(long, default_value_t = GenPromptsParams::default().top_p)]
    pub top_p: f64,
    /// Tokens per generated prompt at most.
    #[arg(long, default_value_t = GenPromptsParams::default().max_tokens)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = GenPromptsParams::default().seed)]
    pub seed: u64,
    /// Output file.
    #[arg(long, default_value = "gen/prompts.jsonl")]
    pub out: String,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub opts: StageOpts,
}

impl Args {
    /// The stage's parameters (flags not given keep the declared defaults).
    pub fn params(&self) -> GenPromptsParams {
        GenPromptsParams {
            count: self.count,
            shots: self.shots,
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            seed: self.seed,
            ..GenPromptsParams::default()
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
    inputs.push(("seeds".into(), file_ref(&store, &ctx.cwd, &args.seeds)?));
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = args.params();
    run_stage_verb_on(
        ctx,
        &args.opts,
        &crate::stages::registry::GEN_PROMPTS,
        inputs,
        vec![("prompts".into(), out)],
        with_server(serde_json::to_value(&p)?, args.server.target()?.as_ref()),
        args.server.engine(),
    )?;
    Ok(())
}
