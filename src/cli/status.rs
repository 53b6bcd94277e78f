//! `srlm status`.

use srlm_store::{Change, ChangeKind, Head, Store};

use super::Ctx;

/// Show where HEAD is, staged changes (to be committed), changes in the working tree not staged
/// yet, and untracked files.
///
/// Example: `srlm status --json`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

fn label(c: &Change) -> &'static str {
    match c.change {
        ChangeKind::Added => "new:     ",
        ChangeKind::Modified => "modified:",
        ChangeKind::Deleted => "deleted: ",
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover_read(&ctx.cwd)?;
    let st = store.status()?;
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string(&st)?)?;
        return Ok(());
    }
    match &st.head {
        Head::Branch {
            name,
            commit: Some(c),
        } => writeln!(ctx.out, "On branch {name} at {}", c.short())?,
        Head::Branch { name, commit: None } => {
            writeln!(ctx.out, "On branch {name} (no commits yet)")?
        }
        Head::Detached { commit } => writeln!(ctx.out, "HEAD detached at {}", commit.short())?,
    }
    let sections: [(&str, Vec<String>); 3] = [
        (
            "Changes to be committed:",
            st.staged
                .iter()
                .map(|c| format!("{} {}", label(c), c.path))
                .collect(),
        ),
        (
            "Changes not staged (use `srlm add`):",
            st.unstaged
                .iter()
                .map(|c| format!("{} {}", label(c), c.path))
                .collect(),
        ),
        ("Untracked files:", st.untracked.clone()),
    ];
    for (title, lines) in sections {
        if !lines.is_empty() {
            writeln!(ctx.out, "{title}")?;
            for l in lines {
                writeln!(ctx.out, "  {l}")?;
            }
        }
    }
    if st.is_clean() && st.untracked.is_empty() {
        writeln!(ctx.out, "nothing to commit, working tree clean")?;
    }
    Ok(())
}
