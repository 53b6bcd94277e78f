//! `srlm generate`: try a model from the shell.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::Ctx;
use crate::engine::generate::{generate_chat, SamplingParams};
use crate::engine::model::{load, resolve_model, WeightMode};

/// Generate responses to a prompt with a model (try a checkpoint from the shell).
///
/// The prompt is wrapped in the model's chat template. Same seed, settings and thread count
/// give byte-identical output.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model: a GGUF file, a Hugging Face llama folder or an srlm checkpoint folder
    /// (default: $SRLM_MODEL, else ~/.cache/srlm/models/SmolLM2-135M-Instruct.Q4_1.gguf).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// The user's instruction (read from standard input when omitted).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Candidates to generate.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Penalty on recently seen tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// How to hold the weights: auto (fastest measured: q8_0), stored, q8_0, q4_0, f32.
    #[arg(long, default_value = "auto")]
    pub weights: WeightMode,
    /// Print JSON (model, settings, candidates) instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let path = resolve_model(args.model.as_deref().map(|p| ctx.cwd.join(p)).as_deref())?;
    let prompt = match args.prompt {
        Some(p) => p,
        None => {
            std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin")?
        }
    };
    anyhow::ensure!(args.n > 0, "--n must be at least 1");
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        repeat_penalty: args.repeat_penalty,
        max_tokens: args.max_tokens,
        seed: args.seed,
        ..SamplingParams::default()
    };
    let t0 = Instant::now();
    let model = load(&path, args.weights)?;
    let load_s = t0.elapsed().as_secs_f64();
    let quiet = ctx.quiet;
    let err = &mut *ctx.err;
    let mut last = None;
    let out = generate_chat(
        &model,
        std::slice::from_ref(&prompt),
        args.n,
        &params,
        &mut |p| {
            if !quiet {
                let _ = write!(
                    err,
                    "\r{} tokens, {:.1} tok/s   ",
                    p.generated_tokens, p.decode_tokens_per_s
                );
            }
            last = Some(p);
        },
    );
    if out.is_err() && last.is_some() && !quiet {
        writeln!(err)?; // end the progress line: the error gets a line of its own
    }
    let out = out?;
    if !quiet {
        let tps = last.map(|p| p.decode_tokens_per_s).unwrap_or(0.0);
        writeln!(
            err,
            "\rloaded {} ({}) in {load_s:.2} s; decode {tps:.1} tok/s",
            path.display(),
            model.weights
        )?;
    }
    let cands = out.into_iter().next().unwrap_or_default();
    if args.json {
        let v = serde_json::json!({
            "model": path.display().to_string(),
            "weights": model.weights,
            "prompt": prompt,
            "params": params,
            "candidates": cands,
        });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for (i, c) in cands.iter().enumerate() {
            if args.n > 1 {
                let finish = serde_json::to_value(c.finish)?;
                writeln!(
                    ctx.out,
                    "--- candidate {} ({} tokens, {})",
                    i + 1,
                    c.tokens,
                    finish.as_str().unwrap_or("")
                )?;
            }
            writeln!(ctx.out, "{}", c.text)?;
        }
    }
    Ok(())
}
