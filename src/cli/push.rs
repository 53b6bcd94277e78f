//! `srlm push`.
use srlm_store::Store;
use srlm_transfer::push::{default_refs, full_ref_names};

use super::remote::{open, print_report, Meter};
use super::Ctx;

/// Send branches and tags to a remote, with only the data it lacks (packs it has are skipped;
/// small objects travel as one bundle). Default: the current branch and every tag. A push that
/// is not a fast-forward is refused unless `--force`; of two pushes of one branch at once the
/// first written wins and the other fails with "lost a race" (its commits are kept on the
/// remote).
///
/// Examples: `srlm push`, `srlm push origin main M1`, `srlm push --json`,
/// `srlm push origin --delete old-branch`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remote name (default origin).
    pub remote: Option<String>,
    /// Branches or tags to push.
    pub refs: Vec<String>,
    /// Overwrite the remote's value even when it is not an ancestor.
    #[arg(short, long)]
    pub force: bool,
    /// Delete the named branches or tags on the remote (nothing local is deleted but the
    /// remote-tracking refs); the objects stay on the remote.
    #[arg(long, conflicts_with = "force")]
    pub delete: bool,
    /// Print the result as JSON (objects, packs and bytes sent, skipped, seconds).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    let remote = open(&store, args.remote.as_deref())?;
    if args.delete {
        if args.refs.is_empty() {
            anyhow::bail!("name the branches or tags to delete on {}", remote.name);
        }
        let rep = srlm_transfer::delete_refs(&mut store, &remote, &args.refs)?;
        return print_report(ctx, &format!("delete on {}", remote.name), &rep, args.json);
    }
    let refs = if args.refs.is_empty() {
        default_refs(&store)?
    } else {
        full_ref_names(&store, &args.refs)?
    };
    if refs.is_empty() {
        anyhow::bail!("nothing to push: no commit on the current branch and no tags");
    }
    let mut m = Meter::new(ctx, args.json);
    let rep = srlm_transfer::push(&mut store, &remote, &refs, args.force, &mut |p| m.tick(p));
    m.finish();
    print_report(ctx, &format!("push to {}", remote.name), &rep?, args.json)
}
