//! `srlm import`.
use std::path::{Path, PathBuf};

use anyhow::Context;
use srlm_store::Store;

use super::server_args::ServerArgs;
use super::stage_util::{file_ref, model_ref, run_stage_verb, run_stage_verb_on, StageOpts};
use super::Ctx;
use crate::stages::import::{EftFrom, ImportParams};
use crate::stages::iterate::layout;
use crate::stages::model_io::with_server;

/// Import seed data as IFT, EFT and EFT-evaluation datasets.
///
/// `srlm import oasst2` reads OpenAssistant data: the official message-tree export or its
/// flattened forms (ranked first turns `question, answer, rank`; scored responses
/// `prompt_id, prompt_text, response_id, response_text, quality_score`). IFT = the best
/// human-ranked answer per first turn; EFT = judge-prompt examples; a held-out evaluation
/// split. IFT and EFT prompts are disjoint. Source files outside the working tree are copied
/// under `sources/` first, so the run records their exact bytes.
///
/// `srlm import builtin` writes srlm's own small seed set (used by `srlm demo`).
///
/// Example: `srlm import oasst2 --ift oasst2_ranked_first_turns.jsonl --eft oasst2_evaluation_fine_tuning.jsonl --eft-from human`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub source: Source,
}

#[derive(Debug, clap::Subcommand)]
pub enum Source {
    /// OpenAssistant OASST2 data.
    Oasst2(Oasst2Args),
    /// srlm's built-in seed set (a few dozen instructions with answers and judged examples).
    Builtin(BuiltinArgs),
}

#[derive(Debug, clap::Args)]
pub struct Oasst2Args {
    /// The IFT source (message tree or ranked first turns); also the EFT source without --eft.
    #[arg(long)]
    pub ift: PathBuf,
    /// The EFT source (message tree or scored responses).
    #[arg(long)]
    pub eft: Option<PathBuf>,
    /// Where EFT targets come from. `model` needs --model, a model that can already judge: the
    /// shipped 135M model cannot, so `human` is the default.
    #[arg(long, value_enum, default_value_t = EftFrom::Human)]
    pub eft_from: EftFrom,
    /// The judging model for `--eft-from model`.
    #[arg(long)]
    pub model: Option<String>,
    /// Share of EFT prompts held out for evaluation (the paper's: 531 of 2,306 examples).
    #[arg(long, default_value_t = crate::stages::import::EVAL_FRACTION)]
    pub eval_fraction: f64,
    #[arg(long)]
    pub max_ift: Option<usize>,
    #[arg(long)]
    pub max_eft: Option<usize>,
    #[arg(long)]
    pub max_eval: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Language code to keep (empty: all).
    #[arg(long, default_value = "en")]
    pub lang: String,
    /// Judge on a server (`--eft-from model` only).
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub opts: StageOpts,
}

#[derive(Debug, clap::Args)]
pub struct BuiltinArgs {
    #[command(flatten)]
    pub opts: StageOpts,
}

/// A source file as a working-tree reference: used in place when inside the working tree,
/// else copied under `sources/oasst2/`.
fn source_ref(store: &Store, cwd: &Path, p: &Path) -> anyhow::Result<String> {
    let abs = cwd.join(p);
    let canon =
        std::fs::canonicalize(&abs).with_context(|| format!("{}: cannot read", abs.display()))?;
    let wd = std::fs::canonicalize(store.workdir())?;
    if canon.starts_with(&wd) {
        return file_ref(store, cwd, &p.to_string_lossy());
    }
    let name = canon
        .file_name()
        .context("source has no file name")?
        .to_string_lossy()
        .into_owned();
    let rel = format!("sources/oasst2/{name}");
    let dest = wd.join(&rel);
    std::fs::create_dir_all(dest.parent().expect("has a parent"))?;
    std::fs::copy(&canon, &dest)
        .with_context(|| format!("copying {} to {}", canon.display(), dest.display()))?;
    Ok(rel)
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let outputs = |eval: bool| {
        let mut v = vec![
            ("ift".to_string(), layout::SEED_IFT.to_string()),
            ("eft".to_string(), layout::SEED_EFT.to_string()),
        ];
        if eval {
            v.push(("eval".into(), layout::SEED_EVAL.into()));
        }
        v
    };
    match args.source {
        Source::Builtin(a) => {
            run_stage_verb(
                ctx,
                &a.opts,
                &crate::stages::registry::SEED,
                vec![],
                outputs(false),
                serde_json::json!({}),
            )?;
        }
        Source::Oasst2(a) => {
            let store = Store::discover(&ctx.cwd)?;
            let mut inputs = vec![("ift".to_string(), source_ref(&store, &ctx.cwd, &a.ift)?)];
            if let Some(e) = &a.eft {
                inputs.push(("eft".into(), source_ref(&store, &ctx.cwd, e)?));
            }
            match (a.eft_from, &a.model, &a.server.server) {
                (EftFrom::Model, _, Some(_)) => {}
                (EftFrom::Model, Some(m), None) => {
                    inputs.extend(model_ref(&store, &ctx.cwd, "model", m)?)
                }
                (EftFrom::Model, None, None) => {
                    anyhow::bail!("--eft-from model needs --model or --server (the judging model)")
                }
                (EftFrom::Human, _, Some(_)) => {
                    anyhow::bail!("--server judges only with --eft-from model")
                }
                _ => {}
            }
            drop(store);
            let p = ImportParams {
                eft_from: a.eft_from,
                eval_fraction: a.eval_fraction,
                max_ift: a.max_ift,
                max_eft: a.max_eft,
                max_eval: a.max_eval,
                seed: a.seed,
                lang: a.lang.clone(),
            };
            run_stage_verb_on(
                ctx,
                &a.opts,
                &crate::stages::registry::IMPORT,
                inputs,
                outputs(true),
                with_server(serde_json::to_value(&p)?, a.server.target()?.as_ref()),
                a.server.engine(),
            )?;
        }
    }
    Ok(())
}
