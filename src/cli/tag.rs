//! `srlm tag`.
use super::Ctx;

/// Create, list or delete tags (M1, M2, AIFT(M1), ...).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm tag` is not implemented yet")
}
