//! `srlm bench diff`.
use super::Ctx;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm bench diff` is not implemented yet")
}
