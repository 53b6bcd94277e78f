//! `srlm sft`.
use srlm_store::Store;

use super::stage_util::{file_ref, model_ref, run_stage_verb, StageOpts};
use super::Ctx;
use crate::engine::lora::LoraConfig;
use crate::stages::model_io::checkpoint_outputs;
use crate::stages::train::SftStageParams;

/// Supervised fine-tuning: M0 + IFT + EFT -> M1. Next-token loss on response tokens only
/// (prompt tokens masked), AdamW with linear warm-up/decay, gradient accumulation, a fixed seed.
/// Writes a full checkpoint folder, records the run and commits it.
///
/// Example: `srlm sft --base M0:base/SmolLM2-135M-Instruct.Q4_1.gguf --ift seed/ift.jsonl --eft seed/eft.jsonl --tag M1`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The base model: a GGUF file or model folder, in the working tree or `REV:path`.
    #[arg(long)]
    pub base: String,
    /// IFT data (`prompt`/`instruction` + `response`/`completion`/`output`).
    #[arg(long)]
    pub ift: String,
    /// EFT data (judge prompt + judgement ending in `Score: N`).
    #[arg(long)]
    pub eft: Option<String>,
    /// Output checkpoint folder (relative to the working tree).
    #[arg(long, default_value = "model")]
    pub out: String,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub opts: StageOpts,
}

/// Optimisation flags shared by `sft` and `dpo`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Passes over the data.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples (or pairs) per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Warm-up steps.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Examples are cut to this many tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Seed of the shuffle and of LoRA's initial matrices.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train LoRA adapters of this rank instead of every weight (merged into the checkpoint).
    #[arg(long)]
    pub lora_rank: Option<usize>,
}

impl TrainArgs {
    pub fn apply(&self, t: &mut crate::engine::train::TrainParams) {
        if let Some(v) = self.lr {
            t.lr = v;
        }
        if let Some(v) = self.epochs {
            t.epochs = v;
        }
        if let Some(v) = self.grad_accum {
            t.grad_accum = v;
        }
        if let Some(v) = self.warmup_steps {
            t.warmup_steps = v;
        }
        if let Some(v) = self.max_tokens {
            t.max_tokens = v;
        }
        if let Some(v) = self.seed {
            t.seed = v;
        }
        if let Some(r) = self.lora_rank {
            t.lora = Some(LoraConfig {
                rank: r,
                ..LoraConfig::default()
            });
        }
    }
}

impl Args {
    /// The stage's parameters (flags not given keep the declared defaults).
    pub fn params(&self) -> SftStageParams {
        let mut p = SftStageParams::default();
        self.train.apply(&mut p.sft.train);
        p
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let mut inputs = model_ref(&store, &ctx.cwd, "base", &args.base)?;
    inputs.push(("ift".into(), file_ref(&store, &ctx.cwd, &args.ift)?));
    if let Some(e) = &args.eft {
        inputs.push(("eft".into(), file_ref(&store, &ctx.cwd, e)?));
    }
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = args.params();
    run_stage_verb(
        ctx,
        &args.opts,
        &crate::stages::registry::SFT,
        inputs,
        checkpoint_outputs("model", &out),
        serde_json::to_value(&p)?,
    )?;
    Ok(())
}
