//! `srlm log`.
use super::Ctx;

/// Show the commit history from a revision (HEAD by default).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm log` is not implemented yet")
}
