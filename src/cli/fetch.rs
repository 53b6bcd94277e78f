//! `srlm fetch` and `srlm pull`.
use srlm_store::Store;

use super::remote::{open, print_report, Meter};
use super::Ctx;

/// Bring a remote's commits, trees, manifests, run records and file bytes that this store
/// lacks (every piece verified before it is written), then set the remote-tracking branches
/// (`NAME/BRANCH`, e.g. `origin/main`) and tags this store does not have. Reports branches that
/// diverged on the remote (two concurrent pushes).
///
/// Examples: `srlm fetch`, `srlm fetch origin --json`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remote name (default origin).
    pub remote: Option<String>,
    /// Print the result as JSON (objects, packs and bytes received, skipped, seconds).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    let remote = open(&store, args.remote.as_deref())?;
    let lazy = srlm_transfer::config::get(&store, &remote.name)?.lazy;
    let mut m = Meter::new(ctx, args.json);
    let rep = srlm_transfer::fetch(&mut store, &remote, lazy, &mut |p| m.tick(p));
    m.finish();
    print_report(
        ctx,
        &format!("fetch from {}", remote.name),
        &rep?,
        args.json,
    )
}

/// Fetch, then fast-forward the current branch to the remote's and check it out. Refuses when
/// the branch and the remote's have both moved on (no merge), or over uncommitted changes.
///
/// Examples: `srlm pull`, `srlm pull origin --json`
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// Remote name (default origin).
    pub remote: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run_pull(args: PullArgs, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    let remote = open(&store, args.remote.as_deref())?;
    let mut m = Meter::new(ctx, args.json);
    let rep = srlm_transfer::pull(&mut store, &remote, &mut |p| m.tick(p));
    m.finish();
    let rep = rep?;
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string(&rep)?)?;
        return Ok(());
    }
    print_report(
        ctx,
        &format!("fetch from {}", remote.name),
        &rep.transfer,
        false,
    )?;
    match (rep.old, rep.new) {
        (o, Some(n)) if o != Some(n) => writeln!(
            ctx.out,
            "{}: fast-forwarded to {} ({} files written)",
            rep.branch,
            n.short(),
            rep.files_written
        )?,
        _ => writeln!(ctx.out, "{}: already up to date", rep.branch)?,
    }
    Ok(())
}
