//! `srlm runs`.
use comfy_table::Table;
use srlm_store::Store;

use super::Ctx;
use crate::runs::{key_figure_parts, list_runs, RunQuery, RunRow};

/// Compare runs: one row per run with its stage, when it started, its inputs by tag (`M2`,
/// `AIFT(M2)`), the parameters that differ between the rows shown (of the same stage), key
/// metrics, duration and status. Without REV: every run in HEAD's history, oldest first, plus
/// a pending (`--no-commit`) run and failed attempts on the same inputs. With REVs: exactly the
/// runs of those commits.
///
/// Example: `srlm runs --stage dpo`, or `srlm runs M2 M3 --json`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Revisions whose commits' runs to show (default: all of HEAD's history).
    pub revs: Vec<String>,
    /// Only runs of this stage (`dpo`, `judge`, …).
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// Print the rows as JSON (every metric, not only the key figures).
    #[arg(long)]
    pub json: bool,
}

/// `2026-12-01T23:07:38.123Z` → `2026-12-01 23:07:38`.
fn when(ts: &str) -> String {
    ts.get(..19).unwrap_or(ts).replacen('T', " ", 1)
}

fn duration(s: Option<f64>) -> String {
    match s {
        Some(s) if s >= 60.0 => {
            let s = s.round() as u64;
            format!("{}m{:02}s", s / 60, s % 60)
        }
        Some(s) => format!("{s:.1}s"),
        None => String::new(),
    }
}

/// The table `srlm runs` prints.
pub fn table(rows: &[RunRow]) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "run", "stage", "tags", "started", "inputs", "params", "metrics", "time", "status",
    ]);
    for r in rows {
        let inputs: Vec<String> = r
            .inputs
            .iter()
            .map(|i| format!("{}={}", i.role, i.label))
            .collect();
        let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let (mut figures, basis) = key_figure_parts(&r.stage, &r.metrics);
        figures.extend(basis);
        let status = match &r.error {
            Some(e) => format!(
                "{}: {}",
                r.status.as_str(),
                e.chars().take(60).collect::<String>()
            ),
            None => r.status.as_str().to_string(),
        };
        t.add_row(vec![
            r.run.short(),
            r.stage.clone(),
            r.tags.join(" "),
            when(&r.started),
            inputs.join("\n"),
            params.join("\n"),
            figures.join("\n"),
            duration(r.seconds),
            status,
        ]);
    }
    t
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover_read(&ctx.cwd)?;
    let rows = list_runs(
        &store,
        &RunQuery {
            revs: args.revs,
            from: Vec::new(),
            stage: args.stage,
        },
    )?;
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(ctx.out, "no runs")?;
        return Ok(());
    }
    writeln!(ctx.out, "{}", table(&rows))?;
    Ok(())
}
