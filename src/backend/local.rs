//! The in-process backend: srlm's candle engine. Requests run one after another on this
//! machine's threads; the judge keeps the KV state of the judge prompt's fixed prefix for the
//! whole batch, and the same seed, inputs and thread count give byte-identical output.
use std::cell::Cell;
use std::path::Path;

use serde_json::{json, Value};

use super::{Backend, ChatRequest, DigitVerdict, JudgeRequest, Sink};
use crate::engine::generate::{generate_chat, Generation, SamplingParams};
use crate::engine::judge::{Judge, JudgeParams};
use crate::engine::model::{load, Model, ModelError, WeightMode};

/// The candle engine on a loaded model.
pub struct Local {
    model: Model,
    requests: Cell<u64>,
    generated: Cell<u64>,
}

impl Local {
    /// Loads the model at `path` (a GGUF file or a checkpoint folder).
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        Ok(Local {
            model: load(path, WeightMode::Auto)?,
            requests: Cell::new(0),
            generated: Cell::new(0),
        })
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
        for (i, r) in requests.iter().enumerate() {
            let res = generate_chat(
                &self.model,
                std::slice::from_ref(&r.user),
                r.n,
                &r.sampling,
                &mut |_| {},
            )
            .map(|mut v| v.pop().unwrap_or_default());
            if let Ok(g) = &res {
                self.count(g);
            }
            let failed = res.is_err();
            done(i, res.map_err(Into::into));
            if failed {
                return;
            }
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
        for (i, r) in requests.iter().enumerate() {
            let res = judge.generations(&r.instruction, &r.response, &params, &mut |_| {});
            if let Ok(g) = &res {
                self.count(g);
            }
            let failed = res.is_err();
            done(i, res.map_err(Into::into));
            if failed {
                return;
            }
        }
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
        for (i, r) in requests.iter().enumerate() {
            let res = judge.digit_score(&r.instruction, &r.response);
            self.requests.set(self.requests.get() + 1);
            let failed = res.is_err();
            done(
                i,
                res.map(|d| DigitVerdict {
                    score: Some(d),
                    text: None,
                })
                .map_err(Into::into),
            );
            if failed {
                return;
            }
        }
    }
}
