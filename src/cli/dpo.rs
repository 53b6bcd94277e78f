//! `srlm dpo`.
use super::Ctx;

/// DPO training on preference pairs: Mt -> M(t+1).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm dpo` is not implemented yet")
}
