//! `srlm init`.
use super::Ctx;

/// Create a new srlm store (`.srlm/`) in a directory and install the shipped hooks.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm init` is not implemented yet")
}
