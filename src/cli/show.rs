//! `srlm show`.

use anyhow::Context;
use srlm_store::Store;

use super::add::human_bytes;
use super::Ctx;

/// Show a commit (header, files, and its run record if any), or with `REV:PATH` write that
/// file's bytes to standard output, exactly as committed (verified while read).
///
/// Examples: `srlm show M1`, `srlm show 'AIFT(M1):aift.jsonl' > pairs.jsonl`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A revision, or REV:PATH.
    #[arg(default_value = "HEAD")]
    pub rev: String,
    /// Print metadata as JSON (for REV:PATH: the entry, not the bytes).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    if args.rev.contains(':') && !args.json {
        super::lazy::hydrate_specs(&ctx.cwd, std::slice::from_ref(&args.rev))?;
    }
    let store = Store::discover_read(&ctx.cwd)?;
    if args.rev.contains(':') {
        let (commit, path, entry) = store.resolve_path(&args.rev)?;
        if args.json {
            let v = serde_json::json!({"commit": commit, "path": path, "entry": entry});
            writeln!(ctx.out, "{v}")?;
        } else {
            // Every piece is checked before the first byte goes out: a damaged file writes
            // nothing (a `> file` redirect must not leave a plausible truncated copy).
            store
                .verify_entry(&entry)
                .with_context(|| format!("{}: nothing was written", args.rev))?;
            let mut r = store.open_entry(&entry)?;
            std::io::copy(&mut r, &mut *ctx.out)?;
        }
        return Ok(());
    }
    let id = store.resolve(&args.rev)?;
    let c = store.read_commit(&id)?;
    let tree = store.read_tree(&c.tree)?;
    let run = match &c.run {
        Some(r) => Some(serde_json::from_slice::<serde_json::Value>(
            &store.get_run(r)?.record,
        )?),
        None => None,
    };
    if args.json {
        let files: serde_json::Map<String, serde_json::Value> = tree
            .entries
            .iter()
            .map(|(p, e)| {
                (
                    p.clone(),
                    serde_json::to_value(e).expect("entry serialises"),
                )
            })
            .collect();
        let v = serde_json::json!({"id": id, "tree": c.tree, "parents": c.parents, "author": c.author,
            "time": c.time, "message": c.message, "run": c.run, "run_record": run, "files": files});
        writeln!(ctx.out, "{}", serde_json::to_string(&v)?)?;
        return Ok(());
    }
    writeln!(ctx.out, "commit {id}")?;
    for p in &c.parents {
        writeln!(ctx.out, "Parent: {p}")?;
    }
    writeln!(ctx.out, "Author: {}\nDate:   {}\n", c.author, c.time)?;
    for l in c.message.lines() {
        writeln!(ctx.out, "    {l}")?;
    }
    writeln!(ctx.out)?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["path", "kind", "size", "rows", "id"]);
    for (p, e) in &tree.entries {
        table.add_row([
            p.clone(),
            e.kind.as_str().to_string(),
            human_bytes(e.size),
            e.rows.map(|r| r.to_string()).unwrap_or_default(),
            e.id.short(),
        ]);
    }
    writeln!(ctx.out, "{table}")?;
    if let (Some(r), Some(v)) = (&c.run, run) {
        writeln!(ctx.out, "\nrun {r}\n{}", serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
