//! The generation backend: the one seam between the stages and whatever produces text. Two
//! implementations: the in-process candle engine ([`local`]) and a client of the
//! OpenAI-compatible HTTP API that vLLM, TGI, SGLang, Ollama and llama.cpp serve ([`server`]).
//!
//! Requests go in as a batch and each result is handed to a callback as it completes (in any
//! order), so a stage can journal every finished row at once and a killed run loses nothing
//! but the requests in flight.
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::generate::{Generation, SamplingParams};
use crate::engine::judge::DigitScore;

pub mod local;
pub mod server;

/// One chat completion: the user turn (the backend applies its chat template), `n` candidates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    pub user: String,
    pub n: usize,
    pub sampling: SamplingParams,
}

/// One (instruction, response) pair to judge with the paper's prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeRequest {
    pub instruction: String,
    pub response: String,
}

/// A digit-judge verdict: the expected score from the next-token log-probabilities after
/// "Score: " (None when there was no such position), and the text the backend wrote, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigitVerdict {
    pub score: Option<DigitScore>,
    pub text: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Model(#[from] crate::engine::model::ModelError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error("request {request} was not sent: an earlier request failed")]
    Cancelled { request: usize },
}

/// Receives each request's result as it completes: (index in the batch, result).
pub type Sink<'a, T> = dyn FnMut(usize, Result<T, BackendError>) + 'a;

/// What the stages generate and judge with.
pub trait Backend {
    /// The backend and its choices, for the run record's `engine` field (never a credential).
    fn describe(&self) -> Value;

    /// Counters so far (requests, retries, tokens, …), recorded with the run's metrics.
    fn usage(&self) -> Value;

    /// For each request, its `n` candidates.
    fn chat(&self, requests: &[ChatRequest], done: &mut Sink<Vec<Generation>>);

    /// For each pair, `samples` sampled judgements (the text of each).
    fn judge(
        &self,
        requests: &[JudgeRequest],
        samples: usize,
        sampling: &SamplingParams,
        done: &mut Sink<Vec<Generation>>,
    );

    /// For each pair, the digit judge's verdict.
    fn digits(
        &self,
        requests: &[JudgeRequest],
        sampling: &SamplingParams,
        done: &mut Sink<DigitVerdict>,
    );
}

/// Collects the results of a batch in order; the first error (by request index) wins.
pub fn collect<T>(
    n: usize,
    run: impl FnOnce(&mut Sink<T>),
) -> Result<Vec<T>, (usize, BackendError)> {
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut err: Option<(usize, BackendError)> = None;
    run(&mut |i, r| match r {
        Ok(v) => out[i] = Some(v),
        Err(e) => {
            if err.as_ref().map_or(true, |(j, _)| i < *j) {
                err = Some((i, e));
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(out
        .into_iter()
        .map(|v| v.expect("every request answered"))
        .collect())
}
