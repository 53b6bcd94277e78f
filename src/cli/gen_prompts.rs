//! `srlm gen-prompts`.
use super::Ctx;

/// Few-shot self-instruction: the model writes new prompts.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm gen-prompts` is not implemented yet")
}
