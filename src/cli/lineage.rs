//! `srlm lineage`.

use srlm_store::Store;

use super::Ctx;
use crate::lineage::{start_objects, walk, Direction, Lineage};
use crate::provenance::ObjectRef;
use crate::stages::inputs::{external_state, ExternalState};

/// Show where a dataset or checkpoint came from: the runs that produced it, their inputs, the
/// runs that produced those, … back to the roots (files no run produced). With --down, show
/// what was made from it instead. Inputs outside the working directory (a model in a cache)
/// are checked against their recorded id: unchanged, changed since the run, or gone. TARGET is REV:PATH (e.g. `M3:model.safetensors`), a path
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
    let external = external_inputs(&store, &lineage);
    let format = if args.json { Format::Json } else { args.format };
    match format {
        Format::Text => {
            write!(ctx.out, "{}", lineage.to_text())?;
            if lineage.runs.is_empty() {
                let what = if args.down { "consumed" } else { "produced" };
                writeln!(ctx.out, "(no recorded run {what} {})", args.target)?;
            }
            for (o, state) in &external {
                writeln!(
                    ctx.out,
                    "external input {} [{}]: {}",
                    o.path,
                    o.id.short(),
                    state.describe()
                )?;
            }
        }
        Format::Json => {
            let mut v = lineage.to_json();
            if let Some(m) = v.as_object_mut() {
                let list: Vec<_> = external
                    .iter()
                    .map(|(o, state)| {
                        serde_json::json!({
                            "path": o.path, "id": o.id.to_string(), "state": state.describe(),
                            "unchanged": *state == ExternalState::Unchanged,
                        })
                    })
                    .collect();
                m.insert("external_inputs".into(), list.into());
            }
            writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?
        }
        Format::Dot => write!(ctx.out, "{}", lineage.to_dot())?,
        Format::Mermaid => write!(ctx.out, "{}", lineage.to_mermaid())?,
    }
    Ok(())
}

/// The inputs outside the working directory of the runs shown, each checked against its
/// record (a stat when unchanged), once per path and id.
fn external_inputs(store: &Store, l: &Lineage) -> Vec<(ObjectRef, ExternalState)> {
    let mut seen = std::collections::BTreeMap::new();
    for r in &l.runs {
        for o in r.record.inputs.values() {
            if o.external_path.is_some() {
                seen.entry((o.path.clone(), o.id))
                    .or_insert_with(|| o.clone());
            }
        }
    }
    seen.into_values()
        .filter_map(|o| external_state(store, &o).map(|s| (o, s)))
        .collect()
}
