//! The command-line interface: one file per verb, each with its clap `Args` (whose doc comment
//! is the verb's help text) and a `run` function. This is the only layer that prints; it uses
//! `anyhow` for errors, the library below it uses typed errors.
use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub mod add;
pub mod bench;
pub mod bench_diff;
pub mod bench_engine;
pub mod bench_llama;
pub mod bench_loop;
pub mod bench_remote;
pub mod bench_server;
pub mod bench_store;
pub mod bench_train;
pub mod bench_util;
pub mod branch;
pub mod checkout;
pub mod clone;
pub mod commit;
pub mod demo;
pub mod diff;
pub mod dpo;
pub mod eval_judge;
pub mod eval_table;
pub mod export;
pub mod fetch;
pub mod fsck;
pub mod gc;
pub mod gen_prompts;
pub mod gen_responses;
pub mod generate;
pub mod head2head;
pub mod import;
pub mod init;
pub mod iterate;
pub mod judge;
pub mod lazy;
pub mod lineage;
pub mod log;
pub mod logprob;
pub mod pairs;
pub mod push;
pub mod remote;
pub mod report;
pub mod reproduce;
pub mod run;
pub mod runs;
pub mod server_args;
pub mod sft;
pub mod show;
pub mod stage_util;
pub mod status;
pub mod tag;
pub mod validate;

#[cfg(test)]
mod defaults_tests;

/// srlm: a versioned dataset-and-experiment tracker for self-rewarding language models.
#[derive(Debug, Parser)]
#[command(name = "srlm", version, about, long_about = None)]
pub struct Cli {
    /// Run as if srlm was started in DIR.
    // Its own id: a verb's `dir` (`init DIR`, `demo DIR`, `bench … --dir`) would otherwise be
    // the same argument, and a relative DIR was applied twice (`init sub` made `sub/sub`).
    #[arg(short = 'C', global = true, value_name = "DIR", id = "chdir")]
    pub dir: Option<PathBuf>,
    /// Print less (no progress bars).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Init(init::Args),
    Add(add::Args),
    Status(status::Args),
    Commit(commit::Args),
    Log(log::Args),
    Show(show::Args),
    Checkout(checkout::Args),
    Tag(tag::Args),
    Branch(branch::Args),
    Lineage(lineage::Args),
    Runs(runs::Args),
    Report(report::Args),
    Fsck(fsck::Args),
    Gc(gc::Args),
    Diff(diff::Args),
    Generate(generate::Args),
    Logprob(logprob::Args),
    Bench(bench::Args),
    Import(import::Args),
    Sft(sft::Args),
    GenPrompts(gen_prompts::Args),
    GenResponses(gen_responses::Args),
    Judge(judge::Args),
    Pairs(pairs::Args),
    Dpo(dpo::Args),
    Export(export::Args),
    EvalJudge(eval_judge::Args),
    Head2head(head2head::Args),
    Run(run::Args),
    Iterate(iterate::Args),
    Reproduce(reproduce::Args),
    Demo(demo::Args),
    Validate(validate::Args),
    Remote(remote::Args),
    Push(push::Args),
    Fetch(fetch::Args),
    Pull(fetch::PullArgs),
    Clone(clone::Args),
}

/// What every command gets: where to write, where it runs.
pub struct Ctx<'a> {
    /// Standard output (data and reports).
    pub out: &'a mut dyn Write,
    /// Standard error (progress, warnings).
    pub err: &'a mut dyn Write,
    /// The directory the command runs in (`-C DIR` or the process's current directory).
    pub cwd: PathBuf,
    /// No progress bars.
    pub quiet: bool,
}

/// An error that means "the check ran and found a problem" (fsck found corruption, a
/// reproduction differs, a hook rejected a commit): exit code 3 instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

/// Run one parsed command.
pub fn dispatch(cmd: Command, ctx: &mut Ctx) -> anyhow::Result<()> {
    match cmd {
        Command::Init(a) => init::run(a, ctx),
        Command::Add(a) => add::run(a, ctx),
        Command::Status(a) => status::run(a, ctx),
        Command::Commit(a) => commit::run(a, ctx),
        Command::Log(a) => log::run(a, ctx),
        Command::Show(a) => show::run(a, ctx),
        Command::Checkout(a) => checkout::run(a, ctx),
        Command::Tag(a) => tag::run(a, ctx),
        Command::Branch(a) => branch::run(a, ctx),
        Command::Lineage(a) => lineage::run(a, ctx),
        Command::Runs(a) => runs::run(a, ctx),
        Command::Report(a) => report::run(a, ctx),
        Command::Fsck(a) => fsck::run(a, ctx),
        Command::Gc(a) => gc::run(a, ctx),
        Command::Diff(a) => diff::run(a, ctx),
        Command::Generate(a) => generate::run(a, ctx),
        Command::Logprob(a) => logprob::run(a, ctx),
        Command::Bench(a) => bench::run(a, ctx),
        Command::Import(a) => import::run(a, ctx),
        Command::Sft(a) => sft::run(a, ctx),
        Command::GenPrompts(a) => gen_prompts::run(a, ctx),
        Command::GenResponses(a) => gen_responses::run(a, ctx),
        Command::Judge(a) => judge::run(a, ctx),
        Command::Pairs(a) => pairs::run(a, ctx),
        Command::Dpo(a) => dpo::run(a, ctx),
        Command::Export(a) => export::run(a, ctx),
        Command::EvalJudge(a) => eval_judge::run(a, ctx),
        Command::Head2head(a) => head2head::run(a, ctx),
        Command::Run(a) => run::run(a, ctx),
        Command::Iterate(a) => iterate::run(a, ctx),
        Command::Reproduce(a) => reproduce::run(a, ctx),
        Command::Demo(a) => demo::run(a, ctx),
        Command::Validate(a) => validate::run(a, ctx),
        Command::Remote(a) => remote::run(a, ctx),
        Command::Push(a) => push::run(a, ctx),
        Command::Fetch(a) => fetch::run(a, ctx),
        Command::Pull(a) => fetch::run_pull(a, ctx),
        Command::Clone(a) => clone::run(a, ctx),
    }
}

/// Entry point of the binary: exit 0 on success, 1 on error, 2 on usage error (clap),
/// 3 when a check found a problem.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let cwd = match cli.dir.clone() {
        Some(d) => d,
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut err = std::io::stderr();
    let mut ctx = Ctx {
        out: &mut out,
        err: &mut err,
        cwd,
        quiet: cli.quiet,
    };
    match dispatch(cli.command, &mut ctx) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = out_flush(&mut ctx);
            eprintln!("error: {e:#}");
            if e.downcast_ref::<CheckFailed>().is_some() {
                std::process::ExitCode::from(3)
            } else {
                std::process::ExitCode::from(1)
            }
        }
    }
}

fn out_flush(ctx: &mut Ctx) -> std::io::Result<()> {
    ctx.out.flush()
}
