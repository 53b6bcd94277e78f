//! `srlm lineage`.

use srlm_store::Store;

use super::Ctx;
use crate::lineage::{start_objects, walk, Direction};

/// Show where a dataset or checkpoint came from: the runs that produced it, their inputs, the
/// runs that produced those, … back to the roots (files no run produced). With --down, show
/// what was made from it instead. TARGET is REV:PATH (e.g. `M3:model.safetensors`), a path
/// (meaning HEAD:PATH), or a revision (the outputs of its commit's run, or all its files).
/// An input resolved from a commit is linked to the run that made it in that commit's
/// history; only working-tree inputs are matched by content (never to a later run). A run or
/// object met again is one line; tags stand beside ids.
///
/// Example: `srlm lineage M3`, `srlm lineage M2:model --format mermaid --depth 3`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// REV[:PATH] or a path in the working directory.
    pub target: String,
    /// Walk downstream (what consumed it) instead of upstream.
    #[arg(long)]
    pub down: bool,
    /// Output format: text (a tree), json, dot (Graphviz) or mermaid.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Same as --format json.
    #[arg(long)]
    pub json: bool,
    /// Follow at most N runs from the target.
    #[arg(long, value_name = "N")]
    pub depth: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let store = Store::discover_read(&ctx.cwd)?;
    let start = start_objects(&store, &ctx.cwd, &args.target)?;
    let dir = if args.down {
        Direction::Down
    } else {
        Direction::Up
    };
    let lineage = walk(&store, start, dir, args.depth)?;
    let format = if args.json { Format::Json } else { args.format };
    match format {
        Format::Text => {
            write!(ctx.out, "{}", lineage.to_text())?;
            if lineage.runs.is_empty() {
                let what = if args.down { "consumed" } else { "produced" };
                writeln!(ctx.out, "(no recorded run {what} {})", args.target)?;
            }
        }
        Format::Json => writeln!(
            ctx.out,
            "{}",
            serde_json::to_string_pretty(&lineage.to_json())?
        )?,
        Format::Dot => write!(ctx.out, "{}", lineage.to_dot())?,
        Format::Mermaid => write!(ctx.out, "{}", lineage.to_mermaid())?,
    }
    Ok(())
}
