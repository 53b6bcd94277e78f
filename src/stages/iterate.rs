//! The self-rewarding loop: per iteration t, `gen-prompts` → `gen-responses` → `judge` →
//! `pairs` → `dpo`, each run through the stage wrapper (so each is recorded and committed), and
//! tags `AIFT(Mt)` on the pairs commit and `M(t+1)` on the DPO commit.
//!
//! Every stage is started with `reuse`: a stage whose inputs and parameters match a committed
//! run is not run again, so a loop killed at any point resumes from the last committed stage.
//! Inputs are named by commit (`<commit>:path`), never by whatever the working tree holds.
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use srlm_store::{CommitId, Store};

use super::decl::StageDecl;
use super::gen_prompts::GenPromptsParams;
use super::generate::GenResponsesParams;
use super::judge::JudgeStageParams;
use super::model_io::{checkpoint_outputs, model_inputs, with_server};
use super::record::{run_stage, Metrics, Outcome, Progress, RecordError};
use super::registry;
use crate::backend::server::{ServerOptions, ServerTarget};
use crate::engine::train::DpoParams;

/// Where the loop keeps its files in the working tree (the same paths every iteration, so
/// `srlm diff 'AIFT(M1)' 'AIFT(M2)'` compares like with like).
pub mod layout {
    pub const BASE_DIR: &str = "base";
    pub const SEED_IFT: &str = "seed/ift.jsonl";
    pub const SEED_EFT: &str = "seed/eft.jsonl";
    pub const SEED_EVAL: &str = "seed/eft_eval.jsonl";
    pub const MODEL_DIR: &str = "model";
    pub const PROMPTS: &str = "gen/prompts.jsonl";
    pub const RESPONSES: &str = "gen/responses.jsonl";
    pub const JUDGEMENTS: &str = "gen/judgements.jsonl";
    pub const AIFT: &str = "aift.jsonl";
}

/// Tag names: `M1`, `M2`, … for models; `AIFT(M1)`, … for the pairs each model produced.
pub fn model_tag(t: usize) -> String {
    format!("M{t}")
}
pub fn aift_tag(t: usize) -> String {
    format!("AIFT(M{t})")
}

/// Parameters of every stage of an iteration.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LoopParams {
    pub gen_prompts: GenPromptsParams,
    pub gen_responses: GenResponsesParams,
    pub judge: JudgeStageParams,
    pub dpo: DpoParams,
    /// Judge with this model (a file or folder reference, e.g. `M0:base/model.gguf`) instead of
    /// the model being iterated (the paper's self-judging); recorded as the judge's input.
    #[serde(default)]
    pub judge_model: Option<String>,
    /// Generate prompts and responses on this server (DPO still trains in process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_server: Option<ServerTarget>,
    /// Judge on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_server: Option<ServerTarget>,
    /// How the client talks to those servers.
    #[serde(default)]
    pub server_client: ServerOptions,
}

impl LoopParams {
    /// A stage's inputs, parameters and engine choices: on `server` (no model input), or in
    /// process on the model `model` gives.
    fn on(
        &self,
        server: Option<&ServerTarget>,
        model: impl FnOnce() -> Result<Vec<(String, String)>, LoopError>,
        params: Value,
    ) -> Result<(Vec<(String, String)>, Value, Value), LoopError> {
        Ok(match server {
            Some(s) => (
                Vec::new(),
                with_server(params, Some(s)),
                serde_json::json!({"backend": "server", "client": self.server_client}),
            ),
            None => (model()?, params, Value::Object(Default::default())),
        })
    }
}

impl LoopParams {
    /// The same parameters with every seed offset for iteration `t` (so iterations differ, and
    /// a replay of iteration t uses exactly its own seeds).
    fn for_iteration(&self, t: usize) -> LoopParams {
        let mut p = self.clone();
        let off = (t as u64) * 1000;
        p.gen_prompts.seed = p.gen_prompts.seed.wrapping_add(off);
        p.gen_responses.sampling.seed = p.gen_responses.sampling.seed.wrapping_add(off);
        p.judge.judge.sampling.seed = p.judge.judge.sampling.seed.wrapping_add(off);
        p.dpo.train.seed = p.dpo.train.seed.wrapping_add(off);
        p
    }
}

/// What happened to one stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageSummary {
    pub iteration: usize,
    pub stage: String,
    pub commit: Option<String>,
    pub reused: bool,
    pub seconds: f64,
    pub metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
    #[error(transparent)]
    Model(#[from] super::model_io::ModelRefError),
    #[error(transparent)]
    Decl(#[from] super::decl::DeclError),
    #[error("stage {stage} committed nothing (it ran with --no-commit?)")]
    NoCommit { stage: String },
}

/// Events the loop reports (the CLI draws progress bars from them).
pub enum Event<'a> {
    StageStart { iteration: usize, stage: &'a str },
    Progress(Progress<'a>),
    StageDone(&'a StageSummary),
}

/// Runs one stage (its declaration's function, roles checked against it) with reuse and
/// reports it.
pub fn run_one(
    workdir: &Path,
    iteration: usize,
    decl: &'static StageDecl,
    inputs: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    (params, engine): (Value, Value),
    events: &mut dyn FnMut(Event),
) -> Result<(Outcome, StageSummary), LoopError> {
    decl.check(&inputs, &outputs)?;
    let name = decl.name;
    events(Event::StageStart {
        iteration,
        stage: name,
    });
    let mut stage = decl.stage().params(params).engine(engine);
    stage.inputs = inputs;
    stage.outputs = outputs;
    stage.reuse = true;
    stage.message = Some(match iteration {
        0 => name.to_string(),
        t => format!("{name} (iteration {t})"),
    });
    let t0 = Instant::now();
    let outcome = run_stage(
        workdir,
        &stage,
        &mut |p| events(Event::Progress(p)),
        decl.run,
    )?;
    let summary = StageSummary {
        iteration,
        stage: name.to_string(),
        commit: outcome.commit.map(|c| c.to_string()),
        reused: outcome.reused,
        seconds: t0.elapsed().as_secs_f64(),
        metrics: outcome.record.metrics.clone(),
    };
    events(Event::StageDone(&summary));
    Ok((outcome, summary))
}

fn committed(o: &Outcome, stage: &str) -> Result<CommitId, LoopError> {
    o.commit.ok_or_else(|| LoopError::NoCommit {
        stage: stage.to_string(),
    })
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).expect("parameters serialise")
}

/// Runs iterations `from..from+iterations` starting at model tag `M{from}` (which must exist),
/// tagging `AIFT(Mt)` and `M(t+1)`. Returns a summary per stage.
pub fn iterate(
    workdir: &Path,
    from: usize,
    iterations: usize,
    params: &LoopParams,
    events: &mut dyn FnMut(Event),
) -> Result<Vec<StageSummary>, LoopError> {
    use layout::*;
    let mut out = Vec::new();
    for t in from..from + iterations {
        let p = params.for_iteration(t);
        let m = model_tag(t);
        let model_ref = format!("{m}:{MODEL_DIR}");
        let model_roles = |role: &str| -> Result<Vec<(String, String)>, LoopError> {
            let store = Store::discover(workdir)?;
            Ok(model_inputs(&store, role, &model_ref)?)
        };
        let seeds = format!("{m}:{SEED_IFT}");

        let policy = p.policy_server.as_ref();
        let (mut inputs, par, engine) =
            p.on(policy, || model_roles("model"), to_value(&p.gen_prompts))?;
        inputs.push(("seeds".into(), seeds));
        let (o, s) = run_one(
            workdir,
            t,
            &registry::GEN_PROMPTS,
            inputs,
            vec![("prompts".into(), PROMPTS.into())],
            (par, engine),
            events,
        )?;
        let c = committed(&o, "gen-prompts")?;
        out.push(s);

        let (mut inputs, par, engine) =
            p.on(policy, || model_roles("model"), to_value(&p.gen_responses))?;
        inputs.push(("prompts".into(), format!("{c}:{PROMPTS}")));
        let (o, s) = run_one(
            workdir,
            t,
            &registry::GEN_RESPONSES,
            inputs,
            vec![("responses".into(), RESPONSES.into())],
            (par, engine),
            events,
        )?;
        let c = committed(&o, "gen-responses")?;
        out.push(s);

        let judge_model = || match &params.judge_model {
            Some(r) => Ok(model_inputs(&Store::discover(workdir)?, "model", r)?),
            None => model_roles("model"),
        };
        let (mut inputs, par, engine) =
            p.on(p.judge_server.as_ref(), judge_model, to_value(&p.judge))?;
        inputs.push(("responses".into(), format!("{c}:{RESPONSES}")));
        let (o, s) = run_one(
            workdir,
            t,
            &registry::JUDGE,
            inputs,
            vec![("judgements".into(), JUDGEMENTS.into())],
            (par, engine),
            events,
        )?;
        let c = committed(&o, "judge")?;
        out.push(s);

        let (o, s) = run_one(
            workdir,
            t,
            &registry::PAIRS,
            vec![("judgements".into(), format!("{c}:{JUDGEMENTS}"))],
            vec![("pairs".into(), AIFT.into())],
            (
                Value::Object(Default::default()),
                Value::Object(Default::default()),
            ),
            events,
        )?;
        let c = committed(&o, "pairs")?;
        out.push(s);
        Store::discover(workdir)?.set_tag(&aift_tag(t), &c, true)?;

        let mut inputs = model_roles("policy")?;
        inputs.push(("pairs".into(), format!("{c}:{AIFT}")));
        let (o, s) = run_one(
            workdir,
            t,
            &registry::DPO,
            inputs,
            checkpoint_outputs("model", MODEL_DIR),
            (to_value(&p.dpo), Value::Object(Default::default())),
            events,
        )?;
        let c = committed(&o, "dpo")?;
        out.push(s);
        Store::discover(workdir)?.set_tag(&model_tag(t + 1), &c, true)?;
    }
    Ok(out)
}
