//! `srlm demo`: the whole loop M0 → M1 → M2 → M3 at toy size on a real model, through the
//! real stages. It creates a store, commits the base model as `M0`, writes srlm's built-in seed
//! set, trains M1 by SFT on its IFT + EFT rows, then runs two self-rewarding iterations.
//! Running it again on the same folder resumes (committed stages are reused).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use srlm_store::{CommitOptions, Store};

use super::iterate::{
    self, layout, model_tag, run_one, Event, LoopError, LoopParams, StageSummary,
};
use super::judge::JudgeMethod;
use super::model_io::{checkpoint_outputs, model_inputs};
use super::train::SftStageParams;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
    #[error(transparent)]
    Commit(#[from] crate::hooks::CommitError),
    #[error(transparent)]
    Model(#[from] super::model_io::ModelRefError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything the demo runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoParams {
    pub sft: SftStageParams,
    pub iterations: usize,
    pub loop_params: LoopParams,
}

/// Toy sizes: small enough for a few minutes on two cores, every stage still real.
pub fn toy_params() -> DemoParams {
    let mut sft = SftStageParams::default();
    // LoRA takes ~25% less time per SFT step than full fine-tuning and half the memory
    // (measured: `srlm bench train`); the checkpoint is still written with the adapters
    // merged, so M1 loads on its own.
    sft.sft.train.lora = Some(crate::engine::lora::LoraConfig::default());
    sft.sft.train.lr = 2e-4;
    sft.sft.train.grad_accum = 8;
    sft.sft.train.max_tokens = 384;
    sft.sft.train.seed = 1;
    let mut lp = LoopParams::default();
    lp.gen_prompts.count = 4;
    lp.gen_prompts.max_tokens = 40;
    lp.gen_prompts.seed = 2;
    lp.gen_responses.n = 4;
    lp.gen_responses.sampling.max_tokens = 48;
    lp.gen_responses.sampling.seed = 3;
    // The shipped 135M model rarely writes a parseable "Score: N" after a toy SFT; the
    // one-pass digit score always gives a number, so the demo's pairs are never all ties.
    lp.judge.method = JudgeMethod::Digits;
    lp.judge.judge.samples = 1;
    lp.dpo.train.grad_accum = 4;
    lp.dpo.train.max_tokens = 256;
    lp.dpo.train.lr = 5e-6;
    lp.dpo.train.seed = 4;
    DemoParams {
        sft,
        iterations: 2,
        loop_params: lp,
    }
}

/// Runs the demo in `dir` (created if needed) with the GGUF or model folder at `model`.
pub fn demo(
    dir: &Path,
    model: &Path,
    params: &DemoParams,
    events: &mut dyn FnMut(Event),
) -> Result<Vec<StageSummary>, DemoError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut store = match Store::discover(dir) {
        Ok(s) if s.workdir() == std::fs::canonicalize(dir).map_err(io(dir))? => s,
        _ => {
            let s = Store::init(dir)?;
            crate::hooks::install(&s.hooks_dir())?;
            s
        }
    };
    let workdir = store.workdir().to_path_buf();
    let mut out = Vec::new();

    // M0: the base model, committed as it is.
    let name = model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let base_rel = format!("{}/{name}", layout::BASE_DIR);
    if store.resolve(&model_tag(0)).is_err() {
        let dest = workdir.join(&base_rel);
        copy_model(model, &dest)?;
        store.add(&workdir, &[PathBuf::from(&base_rel)])?;
        drop(store);
        let opts = CommitOptions {
            message: format!("M0: base model {name}"),
            ..Default::default()
        };
        let c = crate::hooks::commit_with_hooks(&workdir, &opts)?.id;
        store = Store::open(&workdir)?;
        store.set_tag(&model_tag(0), &c, true)?;
    }
    drop(store);

    let (o, s) = run_one(
        &workdir,
        0,
        &super::registry::SEED,
        vec![],
        vec![
            ("ift".into(), layout::SEED_IFT.into()),
            ("eft".into(), layout::SEED_EFT.into()),
        ],
        (
            Value::Object(Default::default()),
            Value::Object(Default::default()),
        ),
        events,
    )?;
    let seed_commit = o.commit.ok_or(LoopError::NoCommit {
        stage: "seed".into(),
    })?;
    out.push(s);

    let store = Store::open(&workdir)?;
    let mut inputs = model_inputs(&store, "base", &format!("{}:{base_rel}", model_tag(0)))?;
    drop(store);
    inputs.push(("ift".into(), format!("{seed_commit}:{}", layout::SEED_IFT)));
    inputs.push(("eft".into(), format!("{seed_commit}:{}", layout::SEED_EFT)));
    let (o, s) = run_one(
        &workdir,
        0,
        &super::registry::SFT,
        inputs,
        checkpoint_outputs("model", layout::MODEL_DIR),
        (
            serde_json::to_value(&params.sft).expect("parameters serialise"),
            Value::Object(Default::default()),
        ),
        events,
    )?;
    let m1 = o.commit.ok_or(LoopError::NoCommit {
        stage: "sft".into(),
    })?;
    out.push(s);
    Store::open(&workdir)?.set_tag(&model_tag(1), &m1, true)?;

    out.extend(iterate::iterate(
        &workdir,
        1,
        params.iterations,
        &params.loop_params,
        events,
    )?);
    Ok(out)
}

/// Copies a model file (or a model folder's files) into the working tree.
fn copy_model(src: &Path, dest: &Path) -> Result<(), DemoError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Io { path, source }
    };
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(err(parent))?;
    }
    if src.is_dir() {
        std::fs::create_dir_all(dest).map_err(err(dest))?;
        for e in std::fs::read_dir(src).map_err(err(src))? {
            let e = e.map_err(err(src))?;
            if e.file_type().map_err(err(src))?.is_file() {
                std::fs::copy(e.path(), dest.join(e.file_name())).map_err(err(dest))?;
            }
        }
    } else {
        std::fs::copy(src, dest).map_err(err(dest))?;
    }
    Ok(())
}
