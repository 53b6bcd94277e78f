//! `srlm pairs`.
use super::Ctx;

/// Build AIFT preference pairs: best vs worst candidate per prompt, ties dropped.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm pairs` is not implemented yet")
}
