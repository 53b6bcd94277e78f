//! `srlm diff`: tree and row-level dataset diffs between two revisions or two files, and the
//! trend of one dataset across three or more revisions.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::Ctx;
use crate::dataset::engine::{plan_many, DiffOptions};
use crate::dataset::files::{diff_paths, first_row, read_records};
use crate::dataset::render::{render_report, render_trend};
use crate::dataset::report::Report;
use crate::dataset::trend::{trend, TrendInput, TrendRow};
use crate::dataset::KeySpec;

/// Compare two revisions (or two files): tree changes and row-level dataset diffs.
///
/// `srlm diff REV_A REV_B [PATH...]` lists the paths that differ (with sizes and ids) and, for
/// every changed JSONL dataset, a row-level diff: rows added / removed / modified / unchanged
/// (rows are matched by the natural key of the dataset's kind, or by --key), duplicate keys,
/// schema changes, which fields changed, statistics of each side (pair count, lengths, score
/// histograms, tie share, chosen == rejected share, unparsed scores) and example rows with a
/// word-level highlight ([-removed-]{+added+}).
///
/// `srlm diff --files A.jsonl B.jsonl` does the same on two files (or two directories) outside
/// any store. `srlm diff M1 M2 M3 --path aift.jsonl` (three or more revisions, or --files with
/// three or more files) prints the trend of one dataset across iterations.
///
/// Kinds and keys: AIFT pairs (prompt, chosen, rejected: key prompt), IFT (prompt or
/// instruction and a response: key prompt), EFT (judge prompt and a judgement with "Score: N":
/// key prompt and response), prompts (key prompt), responses and judgements (key prompt_id and
/// index), other JSONL (key: the whole row).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Two revisions, then optional paths to limit the diff to; with --path, two or more
    /// revisions; with --files, two files or directories (three or more files: a trend).
    #[arg(value_name = "REV_OR_PATH", required = true)]
    pub args: Vec<String>,
    /// Compare files or directories outside any store instead of revisions.
    #[arg(long)]
    pub files: bool,
    /// The dataset to follow across revisions (with three or more revisions: a trend table).
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Match rows by these fields instead of the natural key of the dataset's kind.
    #[arg(long, value_name = "FIELD[,FIELD]")]
    pub key: Option<String>,
    /// Example rows shown per class (added, removed, modified).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub limit: usize,
    /// Print the summary and statistics only (no rows are read beyond the statistics).
    #[arg(long)]
    pub stat: bool,
    /// Print one JSON document (schema `srlm.diff/v1` or `srlm.trend/v1`, see the README).
    #[arg(long)]
    pub json: bool,
    /// Report a dataset that cannot be diffed (bad line, missing key field) and go on with the
    /// others; the command still exits 1 at the end.
    #[arg(long)]
    pub keep_going: bool,
}

fn usage(msg: &str) -> ! {
    super::Cli::command()
        .error(clap::error::ErrorKind::WrongNumberOfValues, msg)
        .exit()
}

fn options(args: &Args) -> anyhow::Result<DiffOptions> {
    let key = match &args.key {
        None => None,
        Some(k) => Some(KeySpec::parse(k).with_context(|| format!("--key {k:?} names no field"))?),
    };
    Ok(DiffOptions {
        key,
        limit: args.limit,
        stat_only: args.stat,
    })
}

/// Trend over files given on the command line.
fn file_trend(files: &[String], ctx: &Ctx, key: Option<&KeySpec>) -> anyhow::Result<Vec<TrendRow>> {
    let paths: Vec<PathBuf> = files.iter().map(|f| ctx.cwd.join(f)).collect();
    let firsts = files
        .iter()
        .zip(&paths)
        .map(|(f, p)| first_row(p, f))
        .collect::<Result<Vec<_>, _>>()?;
    let specs = plan_many(&firsts, key);
    let mut inputs = Vec::new();
    for ((f, p), spec) in files.iter().zip(&paths).zip(specs) {
        let records = read_records(p, f, &spec)?.records;
        inputs.push(TrendInput {
            rev: f.clone(),
            spec,
            records,
        });
    }
    Ok(trend(&inputs))
}

fn print_trend(ctx: &mut Ctx, path: &str, rows: &[TrendRow], json: bool) -> anyhow::Result<()> {
    if json {
        let doc = serde_json::json!({"schema": "srlm.trend/v1", "path": path, "revisions": rows});
        serde_json::to_writer_pretty(&mut *ctx.out, &doc)?;
        writeln!(ctx.out)?;
    } else {
        render_trend(ctx.out, path, rows)?;
    }
    Ok(())
}

fn print_report(ctx: &mut Ctx, report: &Report, args: &Args) -> anyhow::Result<()> {
    if args.json {
        serde_json::to_writer_pretty(&mut *ctx.out, report)?;
        writeln!(ctx.out)?;
    } else {
        render_report(ctx.out, report, args.stat)?;
    }
    if !report.errors.is_empty() {
        anyhow::bail!(
            "{} dataset(s) could not be diffed (see above)",
            report.errors.len()
        );
    }
    Ok(())
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let opts = options(&args)?;
    if args.files {
        if args.args.len() < 2 {
            usage("--files needs two files or directories (or three or more files for a trend)");
        }
        if args.args.len() > 2 {
            let rows = file_trend(&args.args, ctx, opts.key.as_ref())?;
            return print_trend(ctx, "(files)", &rows, args.json);
        }
        let (a, b) = (ctx.cwd.join(&args.args[0]), ctx.cwd.join(&args.args[1]));
        let report = diff_paths(
            (&a, &args.args[0]),
            (&b, &args.args[1]),
            &opts,
            args.keep_going,
        )?;
        return print_report(ctx, &report, &args);
    }
    committed(args, opts, ctx)
}

fn committed(args: Args, opts: DiffOptions, ctx: &mut Ctx) -> anyhow::Result<()> {
    use crate::dataset::committed::{diff_revisions, trend_revisions};
    if args.args.len() < 2 {
        usage("srlm diff needs two revisions (or --files A B)");
    }
    let specs: Vec<String> = match &args.path {
        Some(p) => args.args.iter().map(|r| format!("{r}:{p}")).collect(),
        None => args.args.clone(),
    };
    super::lazy::hydrate_specs(&ctx.cwd, &specs)?;
    let store = srlm_store::Store::discover_read(&ctx.cwd)?;
    if let Some(path) = &args.path {
        let tp = store.tree_path(&ctx.cwd, std::path::Path::new(path))?;
        if args.args.len() > 2 {
            let rows = trend_revisions(&store, &args.args, &tp, opts.key.as_ref())?;
            return print_trend(ctx, &tp, &rows, args.json);
        }
        let report = diff_revisions(
            &store,
            &args.args[0],
            &args.args[1],
            &[tp],
            &opts,
            args.keep_going,
        )?;
        return print_report(ctx, &report, &args);
    }
    let only = args.args[2..]
        .iter()
        .map(|p| store.tree_path(&ctx.cwd, std::path::Path::new(p)))
        .collect::<Result<Vec<_>, _>>()?;
    let report = diff_revisions(
        &store,
        &args.args[0],
        &args.args[1],
        &only,
        &opts,
        args.keep_going,
    )?;
    print_report(ctx, &report, &args)
}
