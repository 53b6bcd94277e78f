//! `srlm diff`.
use super::Ctx;

/// Compare two revisions (or two files): tree changes and row-level dataset diffs.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm diff` is not implemented yet")
}
