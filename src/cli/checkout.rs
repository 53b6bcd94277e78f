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
    hydrate_lazy(&store, &ctx.cwd, &args.rev, &args.paths)?;
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

/// In a lazy clone, fetch the file bytes `rev` (or its `paths`) needs from the remote first.
pub fn hydrate_lazy(
    store: &Store,
    cwd: &std::path::Path,
    rev: &str,
    paths: &[PathBuf],
) -> anyhow::Result<()> {
    if !srlm_transfer::config::list(store)?
        .iter()
        .any(|(_, c)| c.lazy)
    {
        return Ok(());
    }
    let tree = store.commit_tree(&store.resolve(rev)?)?;
    let mut wanted = Vec::new();
    for p in paths {
        let tp = store.tree_path(cwd, p)?;
        wanted.push(tp);
    }
    let entries = tree.entries.iter().filter(|(k, _)| {
        wanted.is_empty()
            || wanted.iter().any(|w| {
                w.is_empty() || k.as_str() == w.as_str() || k.starts_with(&format!("{w}/"))
            })
    });
    srlm_transfer::hydrate(store, entries.map(|(_, e)| &e.id), &mut |_| {})?;
    Ok(())
}
