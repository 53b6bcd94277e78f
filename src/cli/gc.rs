//! `srlm gc`.
use super::Ctx;

/// Remove objects unreachable from any ref or the staging area.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm gc` is not implemented yet")
}
