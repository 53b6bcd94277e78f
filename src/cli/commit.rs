//! `srlm commit`.

use srlm_store::{CommitOptions, Head, Store};

use super::Ctx;

/// Record the staged files as a commit on the current branch.
///
/// Example: `srlm commit -m "IFT and EFT seed data"`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The commit message.
    #[arg(short, long)]
    pub message: String,
    /// Author (default: $SRLM_AUTHOR, then $USER).
    #[arg(long)]
    pub author: Option<String>,
    /// Commit even if nothing changed since the parent commit.
    #[arg(long)]
    pub allow_empty: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    let opts = CommitOptions {
        message: args.message.clone(),
        author: args.author,
        run: None,
        allow_empty: args.allow_empty,
    };
    let id = store.commit(&opts)?;
    let branch = match store.head()? {
        Head::Branch { name, .. } => name,
        Head::Detached { .. } => "detached HEAD".into(),
    };
    if args.json {
        writeln!(
            ctx.out,
            "{}",
            serde_json::json!({"commit": id, "branch": branch})
        )?;
    } else {
        writeln!(ctx.out, "[{branch} {}] {}", id.short(), args.message)?;
    }
    Ok(())
}
