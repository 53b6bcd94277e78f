//! `srlm checkout`.
use std::path::PathBuf;

use srlm_store::Store;

use super::Ctx;

/// Restore the working tree to a revision, byte for byte (every piece is verified; corrupt data
/// is never written out). Without paths, all tracked files are restored, files not in the
/// revision are removed, and HEAD moves (onto the branch if REV is one). With `-- PATH…`, only
/// those files are restored and staged. Refuses to overwrite uncommitted changes unless
/// `--force`.
///
/// Examples: `srlm checkout M1`, `srlm checkout main -- data/aift.jsonl`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Revision to restore (HEAD, HEAD~N, branch, tag, id prefix).
    pub rev: String,
    /// Only these files or directories.
    #[arg(last = true)]
    pub paths: Vec<PathBuf>,
    /// Overwrite uncommitted changes.
    #[arg(short, long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    let rep = store.checkout(&ctx.cwd, &args.rev, &args.paths, args.force)?;
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string(&rep)?)?;
        return Ok(());
    }
    for p in &rep.written {
        writeln!(ctx.out, "restored  {p}")?;
    }
    for p in &rep.removed {
        writeln!(ctx.out, "removed   {p}")?;
    }
    let c = rep.commit.map(|c| c.short()).unwrap_or_default();
    writeln!(
        ctx.out,
        "checked out {} ({c}): {} restored, {} unchanged, {} removed",
        args.rev,
        rep.written.len(),
        rep.unchanged.len(),
        rep.removed.len()
    )?;
    Ok(())
}
