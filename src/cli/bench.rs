//! `srlm bench`: benchmarks that print measured figures. Each kind lives in its own file.
use super::Ctx;

/// Benchmarks that print measured figures (store, diff, engine, train, server, remote, loop).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// add+commit of a 540 MB file and of 100k JSONL preference pairs, beside the floor (b3sum, cp+sync).
    Store(super::bench_store::Args),
    /// Keyed diff of two versions of a 100k-pair AIFT file, from files and from commits.
    Diff(super::bench_diff::Args),
    /// Prefill / decode tokens per second and judge seconds per response on the default model.
    Engine(super::bench_engine::Args),
    /// SFT and DPO seconds per example and peak memory on the default model.
    Train(super::bench_train::Args),
    /// An OpenAI-compatible server beside the in-process engine: tokens/s by concurrency,
    /// judge seconds per response, the client's CPU share.
    Server(super::bench_server::Args),
    /// Push, second push (90% shared), clone and lazy clone of a checkpoint, beside a raw PUT.
    Remote(super::bench_remote::Args),
    /// One whole self-rewarding iteration at a chosen size: seconds, tokens/s and peak memory
    /// per stage.
    Loop(super::bench_loop::Args),
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    match args.which {
        Which::Store(a) => super::bench_store::run(a, ctx),
        Which::Diff(a) => super::bench_diff::run(a, ctx),
        Which::Engine(a) => super::bench_engine::run(a, ctx),
        Which::Train(a) => super::bench_train::run(a, ctx),
        Which::Server(a) => super::bench_server::run(a, ctx),
        Which::Remote(a) => super::bench_remote::run(a, ctx),
        Which::Loop(a) => super::bench_loop::run(a, ctx),
    }
}
