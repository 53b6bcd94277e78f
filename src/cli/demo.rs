//! `srlm demo`.
use super::Ctx;

/// Run the whole loop M0 -> M1 -> M2 -> M3 at toy size on the default model.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm demo` is not implemented yet")
}
