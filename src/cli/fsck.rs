//! `srlm fsck`.
use super::Ctx;

/// Verify every object in the store: hashes, references, manifests.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm fsck` is not implemented yet")
}
