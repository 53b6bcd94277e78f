//! The in-process backend: srlm's candle engine. A batch of requests runs as one continuous
//! batch on this machine's threads (up to `max_batch` sequences decoding together, across
//! requests); the judge keeps the KV state of the judge prompt's fixed prefix for the whole
//! batch, and the same seed, inputs and thread count give byte-identical output whatever
//! `max_batch` is (so it is not recorded).
use std::cell::Cell;
use std::path::Path;

use serde_json::{json, Value};

use super::{Backend, ChatRequest, DigitVerdict, JudgeRequest, Sink};
use crate::engine::batch::{self, Job, DEFAULT_MAX_BATCH};
use crate::engine::generate::{Generation, SamplingParams};
use crate::engine::judge::{Judge, JudgeParams};
use crate::engine::model::{load, Model, ModelError, WeightMode};

/// The candle engine on a loaded model.
pub struct Local {
    model: Model,
    max_batch: usize,
    requests: Cell<u64>,
    generated: Cell<u64>,
}

impl Local {
    /// Loads the model at `path` (a GGUF file or a checkpoint folder).
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        Ok(Local {
            model: load(path, WeightMode::Auto)?,
            max_batch: DEFAULT_MAX_BATCH,
            requests: Cell::new(0),
            generated: Cell::new(0),
        })
    }

    /// Decode up to `max_batch` sequences together (default [`DEFAULT_MAX_BATCH`]).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    fn count(&self, gens: &[Generation]) {
        self.requests.set(self.requests.get() + 1);
        let t: usize = gens.iter().map(|g| g.tokens).sum();
        self.generated.set(self.generated.get() + t as u64);
    }
}

impl Backend for Local {
    fn describe(&self) -> Value {
        json!({
            "backend": "in-process",
            "weights": self.model.weights,
            "threads": rayon::current_num_threads(),
        })
    }

    fn usage(&self) -> Value {
        json!({
            "requests": self.requests.get(),
            "completion_tokens": self.generated.get(),
        })
    }

    fn chat(&self, requests: &[ChatRequest], done: &mut Sink<Vec<Generation>>) {
        let mut jobs = Vec::with_capacity(requests.len());
        let mut failed = None;
        for (i, r) in requests.iter().enumerate() {
            match self.model.prompt(&r.user) {
                Ok(text) => jobs.push(Job {
                    text,
                    n: r.n,
                    params: &r.sampling,
                    prefix: None,
                }),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        batch::generate(
            &self.model,
            &jobs,
            self.max_batch,
            &mut |_| {},
            &mut |i, res| {
                if let Ok(g) = &res {
                    self.count(g);
                }
                done(i, res.map_err(Into::into))
            },
        );
        if let Some((i, e)) = failed {
            done(i, Err(e.into()));
        }
    }

    fn judge(
        &self,
        requests: &[JudgeRequest],
        samples: usize,
        sampling: &SamplingParams,
        done: &mut Sink<Vec<Generation>>,
    ) {
        let judge = match Judge::new(&self.model) {
            Ok(j) => j,
            Err(e) => return done(0, Err(e.into())),
        };
        let params = JudgeParams {
            samples,
            sampling: sampling.clone(),
        };
        let pairs: Vec<(&str, &str)> = requests
            .iter()
            .map(|r| (r.instruction.as_str(), r.response.as_str()))
            .collect();
        let mut sink = |i: usize, res: Result<Vec<Generation>, ModelError>| {
            if let Ok(g) = &res {
                self.count(g);
            }
            done(i, res.map_err(Into::into))
        };
        judge.generations_batched(&pairs, &params, self.max_batch, &mut |_| {}, &mut sink);
    }

    fn digits(
        &self,
        requests: &[JudgeRequest],
        _sampling: &SamplingParams,
        done: &mut Sink<DigitVerdict>,
    ) {
        let judge = match Judge::new(&self.model) {
            Ok(j) => j,
            Err(e) => return done(0, Err(e.into())),
        };
        let pairs: Vec<(&str, &str)> = requests
            .iter()
            .map(|r| (r.instruction.as_str(), r.response.as_str()))
            .collect();
        judge.digit_scores(&pairs, self.max_batch, &mut |i, res| {
            self.requests.set(self.requests.get() + 1);
            done(
                i,
                res.map(|d| DigitVerdict {
                    score: Some(d),
                    text: None,
                })
                .map_err(Into::into),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::collect;
    use crate::engine::fixture::write_tiny_model;

    fn sampling(seed: u64, max_tokens: usize) -> SamplingParams {
        SamplingParams {
            max_tokens,
            seed,
            temperature: 1.0,
            ..SamplingParams::default()
        }
    }

    /// Every request is answered once, with what the engine gives it alone, whatever the
    /// batch size.
    #[test]
    fn batched_requests_answer_each_as_alone() {
        let t = tempfile::tempdir().unwrap();
        write_tiny_model(t.path(), 6).unwrap();
        let chats: Vec<ChatRequest> = [("Hi", 3, 1), ("Write a long poem about rain.", 1, 2)]
            .iter()
            .chain(&[("Add 2 and 3.", 2, 3), ("Name a colour.", 4, 4)])
            .map(|&(user, n, seed)| ChatRequest {
                user: user.into(),
                n,
                sampling: sampling(seed, 5 + seed as usize * 3),
            })
            .collect();
        let pairs: Vec<JudgeRequest> = [("What is 2+2?", "4"), ("Hi", "Hello!"), ("Why?", "")]
            .iter()
            .map(|&(i, r)| JudgeRequest {
                instruction: i.into(),
                response: r.into(),
            })
            .collect();
        let judged = sampling(9, 6);
        let base = Local::open(t.path()).unwrap().with_max_batch(1);
        let m = base.model();
        let judge = Judge::new(m).unwrap();
        let want_chat: Vec<Vec<Generation>> = chats
            .iter()
            .map(|r| {
                let one = std::slice::from_ref(&r.user);
                let mut g =
                    crate::engine::generate::generate_chat(m, one, r.n, &r.sampling, &mut |_| {});
                g.as_mut().unwrap().pop().unwrap()
            })
            .collect();
        let params = JudgeParams {
            samples: 2,
            sampling: judged.clone(),
        };
        let want_judge: Vec<Vec<Generation>> = pairs
            .iter()
            .map(|p| {
                judge
                    .generations(&p.instruction, &p.response, &params, &mut |_| {})
                    .unwrap()
            })
            .collect();
        let want_digits: Vec<DigitVerdict> = pairs
            .iter()
            .map(|p| DigitVerdict {
                score: Some(judge.digit_score(&p.instruction, &p.response).unwrap()),
                text: None,
            })
            .collect();
        for b in [1, 2, 5, DEFAULT_MAX_BATCH] {
            let local = Local::open(t.path()).unwrap().with_max_batch(b);
            let mut calls = vec![0; chats.len()];
            let got = collect(chats.len(), |sink| {
                local.chat(&chats, &mut |i, r| {
                    calls[i] += 1;
                    sink(i, r)
                })
            })
            .unwrap();
            assert_eq!(calls, vec![1; chats.len()], "max_batch {b}");
            assert_eq!(got, want_chat, "chat, max_batch {b}");
            let got = collect(pairs.len(), |s| local.judge(&pairs, 2, &judged, s)).unwrap();
            assert_eq!(got, want_judge, "judge, max_batch {b}");
            let got = collect(pairs.len(), |s| local.digits(&pairs, &judged, s)).unwrap();
            assert_eq!(got, want_digits, "digits, max_batch {b}");
            let usage = local.usage();
            assert_eq!(usage["requests"], (chats.len() + 2 * pairs.len()) as u64);
        }
    }
}
