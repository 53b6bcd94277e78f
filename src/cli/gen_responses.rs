//! `srlm gen-responses`.
use super::Ctx;

/// Sample N candidate responses per prompt.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm gen-responses` is not implemented yet")
}
