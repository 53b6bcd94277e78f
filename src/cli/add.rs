//! `srlm add`.
use super::Ctx;

/// Stage files: hash and store their content (datasets row by row, checkpoints in chunks).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm add` is not implemented yet")
}
