//! `srlm gc`.

use srlm_store::Store;

use super::add::human_bytes;
use super::Ctx;

/// Remove objects that nothing reaches: not a branch, tag or HEAD (through commits, trees,
/// manifests and run records), not a staged file. Packs holding some unreachable pieces are
/// rewritten; leftovers of interrupted writes are removed.
///
/// Example: `srlm gc --dry-run`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Run even when commits look lost (once a ref's value, now reachable from none): they
    /// are deleted too.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    let rep = match store.gc_forced(args.dry_run, args.force) {
        Err(e @ srlm_store::StoreError::GcUnreferencedCommits(_)) => {
            anyhow::bail!("{e} (srlm gc --force)")
        }
        r => r?,
    };
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string(&rep)?)?;
        return Ok(());
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    writeln!(
        ctx.out,
        "{verb} {} objects, {} pieces ({} packs dropped, {} rewritten), {} leftovers: {} freed",
        rep.loose_removed,
        rep.pieces_removed,
        rep.packs_removed,
        rep.packs_rewritten,
        rep.leftovers_removed,
        human_bytes(rep.bytes_freed)
    )?;
    Ok(())
}
