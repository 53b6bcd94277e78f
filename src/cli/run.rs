//! `srlm run`.
use super::Ctx;

/// Run an external command as a stage: hash inputs before, outputs after, commit.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm run` is not implemented yet")
}
