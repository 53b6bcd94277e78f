//! `srlm dpo`.
use srlm_store::Store;

use super::sft::TrainArgs;
use super::stage_util::{file_ref, model_ref, run_stage_verb, StageOpts};
use super::Ctx;
use crate::engine::train::DpoParams;
use crate::stages::model_io::checkpoint_outputs;

/// DPO on preference pairs: Mt + AIFT(Mt) -> M(t+1). Sigmoid loss with log-probs summed over
/// response tokens; the reference is the policy's starting weights (the paper's choice) unless
/// `--reference` names another model; reference log-probs are computed once and cached.
///
/// Example: `srlm dpo --policy M1:model --pairs 'AIFT(M1):aift.jsonl' --tag M2`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy to train (and, by default, the reference).
    #[arg(long)]
    pub policy: String,
    /// Preference pairs (`prompt`, `chosen`, `rejected`).
    #[arg(long)]
    pub pairs: String,
    /// A different frozen reference model.
    #[arg(long)]
    pub reference: Option<String>,
    /// KL strength β.
    #[arg(long, default_value_t = DpoParams::default().beta)]
    pub beta: f64,
    /// Output checkpoint folder.
    #[arg(long, default_value = "model")]
    pub out: String,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub opts: StageOpts,
}

impl Args {
    /// The stage's parameters (flags not given keep the declared defaults).
    pub fn params(&self) -> DpoParams {
        let mut p = DpoParams {
            beta: self.beta,
            ..DpoParams::default()
        };
        self.train.apply(&mut p.train);
        p
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let mut inputs = model_ref(&store, &ctx.cwd, "policy", &args.policy)?;
    inputs.push(("pairs".into(), file_ref(&store, &ctx.cwd, &args.pairs)?));
    if let Some(r) = &args.reference {
        inputs.extend(model_ref(&store, &ctx.cwd, "reference", r)?);
    }
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    let p = args.params();
    run_stage_verb(
        ctx,
        &args.opts,
        &crate::stages::registry::DPO,
        inputs,
        checkpoint_outputs("model", &out),
        serde_json::to_value(&p)?,
    )?;
    Ok(())
}
