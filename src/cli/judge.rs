//! `srlm judge`.
use super::Ctx;

/// LLM-as-a-Judge: score every candidate response (k samples averaged).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm judge` is not implemented yet")
}
