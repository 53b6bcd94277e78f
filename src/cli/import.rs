//! `srlm import`.
use super::Ctx;

/// Import seed data (OASST2) as IFT, EFT and EFT-evaluation datasets.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm import` is not implemented yet")
}
