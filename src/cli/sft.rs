//! `srlm sft`.
use super::Ctx;

/// Supervised fine-tuning: M0 + IFT + EFT -> M1.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm sft` is not implemented yet")
}
