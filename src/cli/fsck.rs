//! `srlm fsck`.

use srlm_store::Store;

use super::{CheckFailed, Ctx};

/// Verify the whole store: re-hash every object and every chunk and row, and check every
/// reference (refs, commits, trees, manifests, run records, staged files). Exits with status 3
/// when it finds a problem. Never changes the store (but with --repair).
///
/// Example: `srlm fsck`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// First rebuild unreadable pack indexes from their packs' frame headers (the only change
    /// fsck ever makes, and only with this flag).
    #[arg(long)]
    pub repair: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    if args.repair {
        let rep = Store::discover(&ctx.cwd)?.repair_pack_indexes()?;
        for n in &rep.fixed {
            writeln!(ctx.err, "repaired: the index of pack {n}")?;
        }
        for (n, why) in &rep.failed {
            writeln!(ctx.err, "not repaired: pack {n}: {why}")?;
        }
    }
    let store = Store::discover_read(&ctx.cwd)?;
    let rep = store.fsck()?;
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string(&rep)?)?;
    } else {
        writeln!(
            ctx.out,
            "checked {} objects, {} pieces in {} packs, {} refs",
            rep.loose_objects, rep.pieces, rep.packs, rep.refs
        )?;
        for n in &rep.notes {
            writeln!(ctx.out, "note: {n}")?;
        }
        for p in &rep.problems {
            writeln!(ctx.out, "problem: {p}")?;
        }
    }
    if !rep.is_clean() {
        return Err(CheckFailed(format!("fsck found {} problem(s)", rep.problems.len())).into());
    }
    if !args.json {
        writeln!(ctx.out, "ok")?;
    }
    Ok(())
}
