//! `srlm status`.
use super::Ctx;

/// Show staged, modified and untracked files against HEAD.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm status` is not implemented yet")
}
