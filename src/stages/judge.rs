//! The judging stages: `judge` (LLM-as-a-Judge over every candidate, k samples averaged, raw
//! judgements kept) and `eval-judge` (agreement with the human ranking).
use serde::{Deserialize, Serialize};

use super::eval_judge::{pairwise_accuracy, Scored};
use super::generate::ResponseRow;
use super::import::EvalRow;
use super::model_io::{input, metrics_of, model_path, output, params};
use super::record::{Metrics, Progress, StageFailure, StageIo};
use crate::engine::judge::{Judge, JudgeParams};
use crate::engine::model::{load, WeightMode};

pub const JUDGE: (&str, &str) = ("judge", "2");
pub const EVAL_JUDGE: (&str, &str) = ("eval-judge", "2");

/// A judged candidate (what `pairs` reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JudgedRow {
    pub prompt_id: String,
    pub prompt: String,
    pub index: u32,
    pub response: String,
    /// Mean of the parsed sample scores; null when none parsed.
    pub score: Option<f64>,
    pub scores: Vec<Option<f64>>,
    pub judgements: Vec<String>,
}

/// How eval-judge scores a response.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum JudgeMethod {
    /// Sampled judgements ending in `Score: N`, averaged (the paper's method).
    #[default]
    Sample,
    /// Expected value of the next-token distribution over 0–5 after "Score: " (one pass).
    Digits,
}

/// Parameters of `judge` / `eval-judge` as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct JudgeStageParams {
    #[serde(flatten)]
    pub judge: JudgeParams,
    #[serde(default)]
    pub method: JudgeMethod,
}

fn score_all(
    io: &mut StageIo,
    p: &JudgeStageParams,
    items: &[(String, String)],
) -> Result<(Vec<Verdict>, String), StageFailure> {
    let mp = model_path(io, "model")?;
    let model = load(&mp.path, WeightMode::Auto)?;
    let judge = Judge::new(&model)?;
    let total = items.len() as u64;
    let mut out = Vec::with_capacity(items.len());
    match p.method {
        JudgeMethod::Sample => {
            let progress = &mut io.progress;
            let js = judge.judge_all(items, &p.judge, &mut |i, _| {
                progress(Progress {
                    done: i as u64,
                    total,
                    message: "judging",
                })
            })?;
            for j in js {
                let scores = j.samples.iter().map(|s| s.score).collect();
                let texts = j.samples.into_iter().map(|s| s.text).collect();
                out.push((j.score, scores, texts));
            }
        }
        JudgeMethod::Digits => {
            for (i, (ins, resp)) in items.iter().enumerate() {
                let d = judge.digit_score(ins, resp)?;
                out.push((
                    Some(d.expected),
                    vec![Some(d.expected)],
                    vec![format!("Score: {:.3}", d.expected)],
                ));
                (io.progress)(Progress {
                    done: i as u64 + 1,
                    total,
                    message: "judging",
                });
            }
        }
    }
    Ok((out, model.weights.clone()))
}

/// A judged response: mean score (None when no sample parsed), each sample's score, the texts.
type Verdict = (Option<f64>, Vec<Option<f64>>, Vec<String>);

/// Reads the rows of input `role`, judges the (instruction, response) each names with the
/// stage's parameters, and returns every row with its verdict, plus the weights used.
fn judge_input<R: serde::de::DeserializeOwned>(
    io: &mut StageIo,
    role: &str,
    pair: impl Fn(&R) -> (String, String),
) -> Result<(Vec<(R, Verdict)>, String), StageFailure> {
    let p: JudgeStageParams = params(io)?;
    let rows: Vec<R> = super::jsonl::read(input(io, role)?)?;
    let items: Vec<(String, String)> = rows.iter().map(pair).collect();
    let (verdicts, weights) = score_all(io, &p, &items)?;
    Ok((rows.into_iter().zip(verdicts).collect(), weights))
}

/// `judge`: inputs `model` (the judge), `responses`; output `judgements`.
pub fn judge(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let (judged, weights) = judge_input(io, "responses", |r: &ResponseRow| {
        (r.prompt.clone(), r.response.clone())
    })?;
    let mut out = Vec::with_capacity(judged.len());
    for (r, (score, scores, judgements)) in judged {
        out.push(JudgedRow {
            prompt_id: r.prompt_id,
            prompt: r.prompt,
            index: r.index,
            response: r.response,
            score,
            scores,
            judgements,
        });
    }
    super::jsonl::write(output(io, "judgements")?, &out)?;
    let parsed: Vec<f64> = out.iter().filter_map(|r| r.score).collect();
    let mut m = Metrics::new();
    m.insert("responses".into(), out.len().into());
    m.insert("unparsed".into(), (out.len() - parsed.len()).into());
    if !parsed.is_empty() {
        m.insert(
            "mean_score".into(),
            (parsed.iter().sum::<f64>() / parsed.len() as f64).into(),
        );
    }
    m.insert("weights".into(), weights.into());
    Ok(m)
}

/// One judged evaluation response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalScoreRow {
    pub prompt_id: String,
    pub response_id: String,
    pub quality_score: f64,
    pub score: Option<f64>,
    pub judgements: Vec<String>,
}

/// `eval-judge`: inputs `model`, `eval` (the EFT evaluation split); output `scores`; the
/// pairwise accuracy is the run's metric.
pub fn eval_judge(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let (judged, weights) = judge_input(io, "eval", |r: &EvalRow| {
        (r.prompt.clone(), r.response.clone())
    })?;
    let mut out = Vec::with_capacity(judged.len());
    for (r, (score, _, judgements)) in judged {
        out.push(EvalScoreRow {
            prompt_id: r.prompt_id,
            response_id: r.response_id,
            quality_score: r.quality_score,
            score,
            judgements,
        });
    }
    super::jsonl::write(output(io, "scores")?, &out)?;
    let acc = pairwise_accuracy(
        &out.iter()
            .map(|r| Scored {
                prompt_id: r.prompt_id.clone(),
                human: r.quality_score,
                judge: r.score,
            })
            .collect::<Vec<_>>(),
    );
    let mut m = metrics_of(&acc);
    m.insert("weights".into(), weights.into());
    Ok(m)
}
