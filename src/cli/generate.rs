//! `srlm generate`.
use super::Ctx;

/// Generate responses to a prompt with a model (try a checkpoint from the shell).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm generate` is not implemented yet")
}
