//! `srlm validate`.
use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;

use super::{CheckFailed, Ctx};

/// Check JSONL datasets: every line parses as a JSON object; preference pairs (rows with
/// `chosen`/`rejected`) have non-empty `prompt`, `chosen`, `rejected` and `chosen != rejected`.
/// Each problem is printed as FILE:LINE: field `NAME`: message; exit status 3 when any is found.
/// The shipped pre-commit hook runs this on every dataset a commit changes.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The JSONL files to check (relative to the current directory).
    pub paths: Vec<PathBuf>,
    /// Also read paths to check from standard input, one per line.
    #[arg(long)]
    pub stdin: bool,
    /// Print the problems as a JSON list.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut paths = args.paths;
    if args.stdin {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading paths from standard input")?;
            if !line.is_empty() {
                paths.push(PathBuf::from(line));
            }
        }
    }
    let mut problems = Vec::new();
    for p in &paths {
        let full = ctx.cwd.join(p);
        problems.extend(crate::hooks::validate_file(
            &full,
            &p.display().to_string(),
        )?);
    }
    if args.json {
        let list: Vec<_> = problems
            .iter()
            .map(|p| serde_json::json!({"file": p.file, "line": p.line, "field": p.field, "message": p.message}))
            .collect();
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&list)?)?;
    } else {
        for p in &problems {
            writeln!(ctx.out, "{p}")?;
        }
    }
    if problems.is_empty() {
        if !args.json {
            writeln!(ctx.out, "{} file(s) valid", paths.len())?;
        }
        Ok(())
    } else {
        let files: std::collections::BTreeSet<&str> =
            problems.iter().map(|p| p.file.as_str()).collect();
        Err(CheckFailed(format!(
            "{} problem(s) in {} file(s)",
            problems.len(),
            files.len()
        ))
        .into())
    }
}
