//! `srlm pairs`.
use srlm_store::Store;

use super::stage_util::{file_ref, run_stage_verb, StageOpts};
use super::Ctx;

/// Build AIFT preference pairs from judged candidates: per prompt, the highest-scored
/// candidate is `chosen`, the lowest `rejected`; ties and unparsed scores are dropped and
/// counted. Writes `{prompt, chosen, rejected, score_chosen, score_rejected}` (TRL's format).
///
/// Example: `srlm pairs --judgements gen/judgements.jsonl --tag 'AIFT(M1)'`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Judged candidates (as `srlm judge` writes them).
    #[arg(long)]
    pub judgements: String,
    /// Output file.
    #[arg(long, default_value = "aift.jsonl")]
    pub out: String,
    #[command(flatten)]
    pub opts: StageOpts,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover(&ctx.cwd)?;
    let inputs = vec![(
        "judgements".to_string(),
        file_ref(&store, &ctx.cwd, &args.judgements)?,
    )];
    let out = super::run::workdir_relative(store.workdir(), &ctx.cwd, &args.out)?;
    drop(store);
    run_stage_verb(
        ctx,
        &args.opts,
        &crate::stages::registry::PAIRS,
        inputs,
        vec![("pairs".into(), out)],
        serde_json::json!({}),
    )?;
    Ok(())
}
