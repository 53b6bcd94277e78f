//! `srlm iterate`.
use super::Ctx;

/// Run the self-rewarding loop: gen-prompts, gen-responses, judge, pairs, dpo per iteration.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm iterate` is not implemented yet")
}
