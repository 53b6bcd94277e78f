//! The judging stages: `judge` (LLM-as-a-Judge over every candidate, k samples averaged, raw
//! judgements kept) and `eval-judge` (agreement with the human ranking).
use serde::{Deserialize, Serialize};

use super::eval_judge::{reward_metrics, Scored};
use super::generate::ResponseRow;
use super::import::EvalRow;
use super::journal::{journalled, Journal};
use super::model_io::{backend, input, metrics_of, output, params, record_backend};
use super::record::{Metrics, Progress, StageFailure, StageIo};
use crate::backend::{Backend, DigitVerdict, JudgeRequest};
use crate::engine::generate::Generation;
use crate::engine::judge::{JudgeParams, Judgement};

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

/// Judges `items` (instruction, response) with the stage's backend; the keys name each item
/// in errors and in the journal.
fn score_all(
    io: &mut StageIo,
    p: &JudgeStageParams,
    items: &[(String, String)],
    keys: &[String],
) -> Result<(Vec<Verdict>, Metrics), StageFailure> {
    let backend = backend(io, "model")?;
    let mut journal = Journal::open(io.journal.as_deref())?;
    let requests: Vec<JudgeRequest> = items
        .iter()
        .map(|(i, r)| JudgeRequest {
            instruction: i.clone(),
            response: r.clone(),
        })
        .collect();
    let total = items.len() as u64;
    let progress = &mut io.progress;
    let mut report = |d: usize| {
        progress(Progress {
            done: d as u64,
            total,
            message: "judging",
        })
    };
    let out = verdicts(
        backend.as_ref(),
        &mut journal,
        p,
        &requests,
        keys,
        &mut report,
    )?;
    let mut m = Metrics::new();
    record_backend(io, backend.as_ref(), &journal, &mut m);
    Ok((out, m))
}

/// Judges `requests` on `backend` with `p`'s method, through the journal (`keys` name each
/// request there and in errors): each one's verdict, in order.
pub(super) fn verdicts(
    backend: &dyn Backend,
    journal: &mut Journal,
    p: &JudgeStageParams,
    requests: &[JudgeRequest],
    keys: &[String],
    report: &mut dyn FnMut(usize),
) -> Result<Vec<Verdict>, StageFailure> {
    let sampling = &p.judge.sampling;
    Ok(match p.method {
        JudgeMethod::Sample => {
            // the method and sampling are in the journal's run key; the request is the pair
            let gens: Vec<Vec<Generation>> = journalled(
                journal,
                keys,
                requests,
                |r, done| backend.judge(r, p.judge.samples, sampling, done),
                report,
            )?;
            gens.into_iter()
                .map(|g| {
                    let j = Judgement::from_texts(g.into_iter().map(|g| g.text).collect());
                    let scores = j.samples.iter().map(|s| s.score).collect();
                    let texts = j.samples.into_iter().map(|s| s.text).collect();
                    (j.score, scores, texts)
                })
                .collect()
        }
        JudgeMethod::Digits => {
            let ds: Vec<DigitVerdict> = journalled(
                journal,
                keys,
                requests,
                |r, done| backend.digits(r, sampling, done),
                report,
            )?;
            ds.into_iter()
                .map(|d| {
                    let e = d.score.map(|s| s.expected);
                    let text = d
                        .text
                        .or_else(|| e.map(|e| format!("Score: {e:.3}")))
                        .unwrap_or_default();
                    (e, vec![e], vec![text])
                })
                .collect()
        }
    })
}

/// A judged response: mean score (None when no sample parsed), each sample's score, the texts.
pub(super) type Verdict = (Option<f64>, Vec<Option<f64>>, Vec<String>);

/// Reads the rows of input `role`, judges the (instruction, response) each names with the
/// stage's parameters, and returns every row with its verdict, plus the backend's metrics.
/// `pair` gives a row's key (for errors and the journal) and its (instruction, response).
fn judge_input<R: serde::de::DeserializeOwned>(
    io: &mut StageIo,
    role: &str,
    pair: impl Fn(&R) -> (String, (String, String)),
) -> Result<(Vec<(R, Verdict)>, Metrics), StageFailure> {
    let p: JudgeStageParams = params(io)?;
    let rows: Vec<R> = super::jsonl::read(input(io, role)?)?;
    let items: Vec<(String, String)> = rows.iter().map(|r| pair(r).1).collect();
    let keys: Vec<String> = rows.iter().map(|r| pair(r).0).collect();
    let (verdicts, m) = score_all(io, &p, &items, &keys)?;
    Ok((rows.into_iter().zip(verdicts).collect(), m))
}

/// `judge`: inputs `model` (the judge), `responses`; output `judgements`.
pub fn judge(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let (judged, backend_metrics) = judge_input(io, "responses", |r: &ResponseRow| {
        (
            format!("prompt {} candidate {}", r.prompt_id, r.index),
            (r.prompt.clone(), r.response.clone()),
        )
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
    m.extend(backend_metrics);
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
/// reward-model measures ([`super::eval_judge`]) are the run's metrics.
pub fn eval_judge(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let (judged, backend_metrics) = judge_input(io, "eval", |r: &EvalRow| {
        (
            format!("prompt {} response {}", r.prompt_id, r.response_id),
            (r.prompt.clone(), r.response.clone()),
        )
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
    let acc = reward_metrics(
        &out.iter()
            .map(|r| Scored {
                prompt_id: r.prompt_id.clone(),
                human: r.quality_score,
                judge: r.score,
            })
            .collect::<Vec<_>>(),
    );
    let mut m = metrics_of(&acc);
    m.extend(backend_metrics);
    Ok(m)
}
