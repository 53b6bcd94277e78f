//! `srlm tag`.

use srlm_store::Store;

use super::Ctx;

/// Create, list or delete tags. Tag names may hold parentheses, so the paper's names work:
/// `M1`, `M2`, `AIFT(M1)`. Without NAME, list the tags.
///
/// Examples: `srlm tag M1`, `srlm tag 'AIFT(M1)' HEAD~1`, `srlm tag -d M1`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tag name (omit to list).
    pub name: Option<String>,
    /// Revision to tag (default HEAD).
    #[arg(default_value = "HEAD")]
    pub rev: String,
    /// Delete the tag.
    #[arg(short, long)]
    pub delete: bool,
    /// Move an existing tag.
    #[arg(short, long)]
    pub force: bool,
    /// List as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    match (args.name, args.delete) {
        (None, true) => anyhow::bail!("--delete needs a tag name"),
        (Some(name), true) => {
            store.delete_tag(&name)?;
            writeln!(ctx.out, "deleted tag {name}")?;
        }
        (Some(name), false) => {
            let id = store.resolve(&args.rev)?;
            store.set_tag(&name, &id, args.force)?;
            writeln!(ctx.out, "tagged {} as {name}", id.short())?;
        }
        (None, false) => {
            let tags = store.tags()?;
            if args.json {
                let m: serde_json::Map<_, _> = tags
                    .iter()
                    .map(|(n, c)| (n.clone(), serde_json::json!(c)))
                    .collect();
                writeln!(ctx.out, "{}", serde_json::Value::Object(m))?;
            } else {
                for (n, c) in tags {
                    writeln!(ctx.out, "{n}\t{}", c.short())?;
                }
            }
        }
    }
    Ok(())
}
