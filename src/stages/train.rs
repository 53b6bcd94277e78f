//! The training stages: `sft` (M0 + IFT + EFT -> M1) and `dpo` (Mt + AIFT(Mt) -> M(t+1),
//! reference = Mt). Both write a full checkpoint folder.
use serde::{Deserialize, Serialize};

use super::model_io::{input, metrics_of, model_path, params, write_checkpoint};
use super::record::{Metrics, Progress, StageFailure, StageIo};
use crate::engine::checkpoint::{self, Contents, Loaded};
use crate::engine::logprob::Encoder;
use crate::engine::train::{self, DpoParams, DpoRow, SftParams, SftRow, StepReport, Trained};

/// A row of an IFT or EFT file: `prompt`/`instruction` + `response`/`completion`/`output`.
#[derive(Debug, Deserialize)]
struct TextRow {
    #[serde(alias = "instruction")]
    prompt: String,
    #[serde(alias = "completion", alias = "output")]
    response: String,
}

/// One optimizer step as recorded in the run's metrics (`step_log`): what the report plots.
/// Wall time is left out, so the figures of a reproduced run are the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepFigures {
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_margin: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_accuracy: Option<f64>,
}

impl From<&StepReport> for StepFigures {
    fn from(s: &StepReport) -> Self {
        StepFigures {
            step: s.step,
            lr: s.lr,
            loss: s.loss,
            reward_margin: s.reward_margin,
            reward_accuracy: s.reward_accuracy,
        }
    }
}

/// The metric under which a training stage records its [`StepFigures`].
pub const STEP_LOG: &str = "step_log";

/// The run's metrics with the per-step figures beside the summary.
fn with_steps<T: Serialize>(m: &T, steps: Vec<StepFigures>) -> Metrics {
    let mut out = metrics_of(m);
    out.insert(
        STEP_LOG.into(),
        serde_json::to_value(steps).expect("figures serialise"),
    );
    out
}

fn report(io: &mut StageIo, s: &StepReport) {
    let msg = match s.reward_accuracy {
        Some(acc) => format!("loss {:.4} reward acc {:.2}", s.loss, acc),
        None => format!("loss {:.4}", s.loss),
    };
    (io.progress)(Progress {
        done: s.step as u64,
        total: s.total_steps as u64,
        message: &msg,
    });
}

/// What a training run ran on, recorded as its `engine`: srlm's own trainer in process (not a
/// server), what it read and how it computes, and the thread count (the same data, seed and
/// thread count give byte-identical weights; another thread count may differ in the last bits).
pub fn training_engine(model: &std::path::Path, p: &train::TrainParams) -> serde_json::Value {
    let source = if model.is_file() {
        "gguf (dequantised to f32)"
    } else {
        "safetensors folder (f32)"
    };
    serde_json::json!({
        "backend": "in-process",
        "trainer": "srlm dense trainer (hand-written backward pass; candle tensors for LoRA on the lm-head)",
        "device": "cpu",
        "dtype": "f32",
        "weights": source,
        "optimizer": "AdamW",
        "mode": match &p.lora {
            Some(l) => format!("lora rank {} (merged into the checkpoint)", l.rank),
            None => "full".to_string(),
        },
        "threads": rayon::current_num_threads(),
        "deterministic": "same data, seed and thread count give byte-identical weights",
    })
}

/// Writes the trained model as a full checkpoint (adapters merged: a checkpoint loads alone).
fn save_full(
    io: &StageIo,
    loaded: &Loaded,
    enc: &Encoder,
    trained: &Trained,
) -> Result<(), StageFailure> {
    let weights = trained.merged()?;
    write_checkpoint(io, "model", |dir| {
        checkpoint::save(
            dir,
            &loaded.cfg,
            Contents::Full(&weights),
            &enc.tokenizer,
            Some(&loaded.chat),
        )?;
        Ok(())
    })
}

/// Parameters of `sft` as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SftStageParams {
    #[serde(flatten)]
    pub sft: SftParams,
}

/// `sft`: inputs `base` (model), `ift`, optionally `eft`; output checkpoint `model`.
pub fn sft(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let p: SftStageParams = params(io)?;
    let base = model_path(io, "base")?;
    let mut rows: Vec<SftRow> = Vec::new();
    for role in ["ift", "eft"] {
        if let Some(path) = io.inputs.get(role) {
            let r: Vec<TextRow> = super::jsonl::read(path)?;
            rows.extend(r.into_iter().map(|r| SftRow {
                prompt: r.prompt,
                response: r.response,
            }));
        }
    }
    io.engine = training_engine(&base.path, &p.sft.train);
    let (mut loaded, enc) = train::load_for_training(&base.path)?;
    let mut steps = Vec::new();
    // Training takes the weights, so they are not held twice (saving needs only the rest).
    let weights = std::mem::take(&mut loaded.weights);
    let (trained, m) = train::sft(&loaded.cfg, weights, &enc, &rows, &p.sft, &mut |s| {
        steps.push(StepFigures::from(s));
        report(io, s)
    })?;
    save_full(io, &loaded, &enc, &trained)?;
    Ok(with_steps(&m, steps))
}

/// `dpo`: inputs `policy` (model; also the reference unless `reference` is given), `pairs`;
/// output checkpoint `model`.
pub fn dpo(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let p: DpoParams = params(io)?;
    let policy = model_path(io, "policy")?;
    let rows: Vec<DpoRow> = super::jsonl::read(input(io, "pairs")?)?;
    if rows.is_empty() {
        return Err("no preference pair to train on (every prompt was a tie or unparsed)".into());
    }
    io.engine = training_engine(&policy.path, &p.train);
    let (mut loaded, enc) = train::load_for_training(&policy.path)?;
    let reference = match io
        .inputs
        .keys()
        .any(|r| r == "reference" || r.starts_with("reference/"))
    {
        true => Some(train::load_for_training(&model_path(io, "reference")?.path)?.0),
        false => None,
    };
    let mut steps = Vec::new();
    let weights = std::mem::take(&mut loaded.weights);
    // The reference's weights go to training too, which frees them once its log-probs are in.
    let (ref_cfg, ref_weights) = reference.map(|r| (r.cfg, r.weights)).unzip();
    let (trained, m) = train::dpo(
        &loaded.cfg,
        weights,
        ref_cfg.as_ref().zip(ref_weights),
        &enc,
        &rows,
        &p,
        &mut |s| {
            steps.push(StepFigures::from(s));
            report(io, s)
        },
    )?;
    save_full(io, &loaded, &enc, &trained)?;
    Ok(with_steps(&m, steps))
}
