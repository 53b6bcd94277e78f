//! `srlm eval-judge`.
use super::Ctx;

/// Judge accuracy against human rankings (pairwise agreement).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm eval-judge` is not implemented yet")
}
