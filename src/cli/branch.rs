//! `srlm branch`.
use super::Ctx;

/// Create, list or delete branches.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm branch` is not implemented yet")
}
