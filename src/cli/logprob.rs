//! `srlm logprob`.
use super::Ctx;

/// Summed log-probability of a response given a chat-formatted prompt (what DPO uses).
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::bail!("`srlm logprob` is not implemented yet")
}
