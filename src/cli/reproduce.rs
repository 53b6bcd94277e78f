//! `srlm reproduce`.
use super::Ctx;

/// Replay the runs upstream of a revision and check every output byte for byte.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm reproduce` is not implemented yet")
}
