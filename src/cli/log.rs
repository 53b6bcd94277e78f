//! `srlm log`.

use srlm_store::Store;

use super::Ctx;

/// Show the commit history from a revision (default HEAD), newest first, with the tags and
/// branches pointing at each commit.
///
/// Example: `srlm log --oneline M2`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Revision to start from (HEAD, HEAD~N, branch, tag, id prefix).
    #[arg(default_value = "HEAD")]
    pub rev: String,
    /// One line per commit.
    #[arg(long)]
    pub oneline: bool,
    /// Show at most N commits.
    #[arg(short = 'n', long)]
    pub max_count: Option<usize>,
    /// Print the history as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover_read(&ctx.cwd)?;
    let from = store.resolve(&args.rev)?;
    let mut log = store.log(&from)?;
    log.truncate(args.max_count.unwrap_or(usize::MAX));
    let mut names: std::collections::HashMap<_, Vec<String>> = Default::default();
    for (n, c) in store.branches()? {
        names.entry(c).or_default().push(n);
    }
    for (n, c) in store.tags()? {
        names.entry(c).or_default().push(format!("tag: {n}"));
    }
    if args.json {
        let v: Vec<_> = log
            .iter()
            .map(|(id, c)| {
                serde_json::json!({"id": id, "refs": names.get(id), "tree": c.tree, "parents": c.parents,
                    "author": c.author, "time": c.time, "message": c.message, "run": c.run})
            })
            .collect();
        writeln!(ctx.out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    for (id, c) in &log {
        let refs = names
            .get(id)
            .map(|n| format!(" ({})", n.join(", ")))
            .unwrap_or_default();
        if args.oneline {
            let first = c.message.lines().next().unwrap_or("");
            writeln!(ctx.out, "{}{refs} {first}", id.short())?;
        } else {
            writeln!(ctx.out, "commit {id}{refs}")?;
            writeln!(ctx.out, "Author: {}", c.author)?;
            writeln!(ctx.out, "Date:   {}", c.time)?;
            if let Some(r) = &c.run {
                writeln!(ctx.out, "Run:    {r}")?;
            }
            writeln!(ctx.out)?;
            for l in c.message.lines() {
                writeln!(ctx.out, "    {l}")?;
            }
            writeln!(ctx.out)?;
        }
    }
    Ok(())
}
