//! `srlm demo`.
use std::path::PathBuf;

use clap::Parser;

use super::stage_util::Bars;
use super::Ctx;
use crate::stages::demo::{demo, toy_params};

/// Run the whole loop M0 → M1 → M2 → M3 at toy size on the default model, through the real
/// stages: create a store in DIR, commit the base model (M0), write srlm's built-in seed set,
/// SFT on its IFT + EFT rows (M1), then two self-rewarding iterations (gen-prompts,
/// gen-responses, judge, pairs, dpo: M2, M3). Then print the log, the AIFT trend across
/// iterations and the lineage of M3. Running it again on the same DIR resumes.
///
/// Example: `srlm demo /tmp/srlm-demo`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the demo store.
    pub dir: PathBuf,
    /// The base model (default: `$SRLM_MODEL`, else the documented default location).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Self-rewarding iterations after M1.
    #[arg(long, default_value_t = 2)]
    pub iterations: usize,
}

/// Runs another verb as if typed on the command line (the demo's closing reports).
fn verb(ctx: &mut Ctx, argv: &[&str]) -> anyhow::Result<()> {
    let cli = super::Cli::try_parse_from(std::iter::once("srlm").chain(argv.iter().copied()))?;
    writeln!(ctx.out, "\n$ srlm {}", argv.join(" "))?;
    super::dispatch(cli.command, ctx)
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let model = crate::engine::model::resolve_model(args.model.as_deref())?;
    let dir = ctx.cwd.join(&args.dir);
    let mut params = toy_params();
    params.iterations = args.iterations;
    let t0 = std::time::Instant::now();
    let mut bars = Bars::new(ctx.quiet);
    let summary = demo(&dir, &model, &params, &mut |e| bars.event(e))?;
    let secs = t0.elapsed().as_secs_f64();
    super::iterate::print_summary(ctx, &summary, false)?;
    writeln!(
        ctx.out,
        "demo finished in {secs:.0} s ({} iterations)",
        args.iterations
    )?;
    ctx.cwd = dir;
    let last = format!("M{}", args.iterations + 1);
    verb(ctx, &["log", "--oneline"])?;
    // The AIFT datasets of the iterations side by side: a diff of two, a trend of three or more.
    let mut argv: Vec<String> = vec!["diff".into()];
    argv.extend((1..=args.iterations).map(|t| format!("AIFT(M{t})")));
    argv.extend([
        "--path".to_string(),
        crate::stages::iterate::layout::AIFT.to_string(),
    ]);
    if args.iterations == 2 {
        argv.push("--stat".into());
    }
    if args.iterations >= 2 {
        verb(ctx, &argv.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    verb(
        ctx,
        &["lineage", &format!("{last}:model/model.safetensors")],
    )?;
    Ok(())
}
