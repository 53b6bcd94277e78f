//! `srlm report`.
use std::path::PathBuf;

use anyhow::Context;
use srlm_store::Store;

use super::Ctx;

/// Write one self-contained HTML page of the loop (inline CSS and SVG: no script, no network,
/// opens from a file): per iteration the prompts kept, pairs, ties and unparsed scores; score
/// histograms of chosen vs rejected; response lengths; DPO loss, reward margin and reward
/// accuracy per step; judge accuracy per model (`eval-judge` runs); the AIFT diff between
/// iterations; the lineage as a graph (of the last model trained, or of the last REV given);
/// every run. REVs (default HEAD) name the histories the report covers.
///
/// Example: `srlm report -o report.html`, or `srlm report M2 -o m2.html`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Revisions whose histories to report (default HEAD).
    pub revs: Vec<String>,
    /// Where to write the page.
    #[arg(short, long, value_name = "FILE", default_value = "report.html")]
    pub output: PathBuf,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover_read(&ctx.cwd)?;
    let report = crate::report::gather(&store, &args.revs)?;
    let page = crate::report::html::render(&report)?;
    let out = ctx.cwd.join(&args.output);
    std::fs::write(&out, &page).with_context(|| format!("writing {}", out.display()))?;
    writeln!(
        ctx.out,
        "wrote {} ({} iterations, {} runs, {} KB)",
        args.output.display(),
        report.iterations.len(),
        report.runs.len(),
        page.len().div_ceil(1024)
    )?;
    Ok(())
}
