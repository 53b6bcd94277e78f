//! `srlm show`.
use super::Ctx;

/// Show a commit (with its run record), or the content of REV:PATH.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm show` is not implemented yet")
}
