//! `srlm lineage`.
use super::Ctx;

/// Walk the runs that produced (or, with --down, consumed) a commit or file.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm lineage` is not implemented yet")
}
