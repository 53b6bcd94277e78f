//! `srlm add`.
use std::path::PathBuf;

use srlm_store::{AddProgress, Store};

use super::Ctx;

/// Stage files for the next commit: hash and store their content. `.jsonl` datasets are stored
/// row by row (rows shared with other datasets are stored once); checkpoints and other files in
/// content-defined chunks (checkpoints sharing tensors share chunks). Directories are added
/// recursively; a tracked path that was deleted is unstaged. An unchanged file costs one stat.
///
/// Example: `srlm add data/ift.jsonl models/M1/model.safetensors`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to stage.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `1234567` -> `1.2 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut store = Store::discover(&ctx.cwd)?;
    let quiet = ctx.quiet;
    let err = &mut *ctx.err;
    let report = store.add_with(&ctx.cwd, &args.paths, &mut |p| match p {
        AddProgress::File { path, size } if !quiet && size >= 64 << 20 => {
            let _ = writeln!(err, "hashing {path} ({})", human_bytes(size));
        }
        _ => {}
    })?;
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string(&report)?)?;
        return Ok(());
    }
    for f in &report.added {
        let rows = f
            .entry
            .rows
            .map(|r| format!(", {r} rows"))
            .unwrap_or_default();
        let how = if f.cached { "unchanged" } else { "added" };
        writeln!(
            ctx.out,
            "{how:<9} {:<10} {} ({}{rows}) {}",
            f.entry.kind.as_str(),
            f.path,
            human_bytes(f.entry.size),
            f.entry.id.short()
        )?;
    }
    for r in &report.removed {
        writeln!(ctx.out, "removed   {r}")?;
    }
    Ok(())
}
