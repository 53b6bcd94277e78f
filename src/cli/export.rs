//! `srlm export`.
use srlm_store::Store;

use super::stage_util::{model_ref, run_stage_verb, StageOpts};
use super::Ctx;
use crate::stages::export::{self, ExportParams, Format, WeightType};

/// Write a model for other tools: a GGUF (llama.cpp, Ollama; tokenizer and chat template in
/// its metadata) or a Hugging Face folder (transformers: config.json, model.safetensors,
/// tokenizer.json, tokenizer_config.json, chat_template.jinja). Recorded as a stage and
/// committed, with lineage back to the model.
///
/// Example: `srlm export M3 --format gguf --type q8_0 -o export/M3.gguf`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model: `REV:PATH`, `REV` (its `model` checkpoint folder) or a path in the working tree.
    pub model: String,
    /// Output format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// GGUF matrix type (default q8_0; norms stay f32). A Hugging Face folder is f32.
    #[arg(long = "type", value_enum)]
    pub weight_type: Option<WeightType>,
    /// Output file (GGUF) or folder (Hugging Face), relative to the working tree.
    #[arg(short = 'o', long = "out")]
    pub out: String,
    #[command(flatten)]
    pub opts: StageOpts,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    // A bare revision names the checkpoint the training stages write (`model`).
    let reference = if !args.model.contains(':') && !ctx.cwd.join(&args.model).exists() {
        format!("{}:model", args.model)
    } else {
        args.model.clone()
    };
    let inputs = model_ref(&store, &ctx.cwd, "model", &reference)?;
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = ExportParams {
        format: args.format,
        weight_type: args.weight_type,
    };
    run_stage_verb(
        ctx,
        &args.opts,
        &crate::stages::registry::EXPORT,
        inputs,
        export::outputs(args.format, &out),
        serde_json::to_value(&p)?,
    )?;
    Ok(())
}
