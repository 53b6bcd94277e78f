//! `srlm logprob`: the summed log-probability of a response given a chat-formatted prompt.
use std::path::PathBuf;

use anyhow::Context;

use super::Ctx;
use crate::engine::dense::Dense;
use crate::engine::logprob;

/// Summed log-probability of a response given a chat-formatted prompt: exactly the quantity
/// DPO uses (response tokens only, the end-of-turn marker included; a GGUF is dequantized to
/// f32 as for training). `--json` adds every response token's id, text and log-prob.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model: a .gguf file, a Hugging Face llama folder or an srlm checkpoint
    /// [default: $SRLM_MODEL, else ~/.cache/srlm/models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// The user's prompt (formatted with the model's chat template).
    #[arg(long)]
    pub prompt: String,
    /// The assistant's response to score.
    #[arg(long)]
    pub response: String,
    /// Print JSON: sum, token count and per-token values.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let path = crate::engine::model::resolve_model(args.model.map(|m| ctx.cwd.join(m)).as_deref())?;
    let (loaded, enc) = crate::engine::train::load_for_training(&path)
        .with_context(|| format!("loading model {}", path.display()))?;
    let model = Dense::new(&loaded.cfg, &loaded.weights, None)?;
    let r = logprob::score(&model, &enc, &args.prompt, &args.response)?;
    if args.json {
        let v = serde_json::json!({
            "model": path,
            "logprob": r.sum,
            "prompt_tokens": r.prompt_tokens,
            "response_tokens": r.tokens.len(),
            "tokens": r.tokens,
        });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(
            ctx.out,
            "{:.6}\t({} response tokens)",
            r.sum,
            r.tokens.len()
        )?;
    }
    Ok(())
}
