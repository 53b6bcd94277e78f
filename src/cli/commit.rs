//! `srlm commit`.
use super::Ctx;

/// Record the staged files as a commit, optionally with manual provenance (a run record).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm commit` is not implemented yet")
}
