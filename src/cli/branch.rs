//! `srlm branch`.

use srlm_store::{Head, Store};

use super::Ctx;

/// Create, list or delete branches. Without NAME, list them (`*` marks HEAD's). A new branch
/// starts at REV (default HEAD); switch to it with `srlm checkout NAME`.
///
/// Examples: `srlm branch`, `srlm branch lr-sweep M1`, `srlm branch -d lr-sweep`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Branch name (omit to list).
    pub name: Option<String>,
    /// Where the new branch starts (default HEAD).
    #[arg(default_value = "HEAD")]
    pub rev: String,
    /// Delete the branch.
    #[arg(short, long)]
    pub delete: bool,
    /// Move an existing branch.
    #[arg(short, long)]
    pub force: bool,
    /// List as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    match (args.name, args.delete) {
        (None, true) => anyhow::bail!("--delete needs a branch name"),
        (Some(name), true) => {
            store.delete_branch(&name)?;
            writeln!(ctx.out, "deleted branch {name}")?;
        }
        (Some(name), false) => {
            let id = store.resolve(&args.rev)?;
            store.set_branch(&name, &id, args.force)?;
            writeln!(ctx.out, "branch {name} at {}", id.short())?;
        }
        (None, false) => {
            let current = match store.head()? {
                Head::Branch { name, .. } => Some(name),
                Head::Detached { .. } => None,
            };
            let branches = store.branches()?;
            if args.json {
                let v = serde_json::json!({
                    "current": current,
                    "branches": branches.iter().map(|(n, c)| (n.clone(), serde_json::json!(c)))
                        .collect::<serde_json::Map<_, _>>(),
                });
                writeln!(ctx.out, "{v}")?;
            } else {
                for (n, c) in branches {
                    let mark = if current.as_deref() == Some(n.as_str()) {
                        "*"
                    } else {
                        " "
                    };
                    writeln!(ctx.out, "{mark} {n}\t{}", c.short())?;
                }
            }
        }
    }
    Ok(())
}
