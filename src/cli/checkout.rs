//! `srlm checkout`.
use super::Ctx;

/// Restore the working tree (or some paths) to a revision, byte for byte.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm checkout` is not implemented yet")
}
