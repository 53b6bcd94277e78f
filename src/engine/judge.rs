//! LLM-as-a-Judge: the paper's additive 5-point prompt (verbatim, curly quotes kept), robust
//! `Score: N` parsing, k sampled judgements per response averaged as floats, and a one-pass
//! score from the next-token distribution over the digits 0–5 after "Score: ". The KV state of
//! the prompt's fixed prefix is computed once and forked by every judgement, which prefills
//! only its question and response; many judgements run together ([`super::batch`]: sampled
//! ones decode as one continuous batch, digit ones prefill many responses per ragged pass).
use candle_core::Tensor;

use super::batch::{self, Done, Job};
use super::generate::{generate_text, Generation, Prefix, Progress, SamplingParams};
use super::model::{KvCache, Model, ModelError, Step};

/// The judge prompt of Yuan et al. (2024), verbatim.
pub const JUDGE_PROMPT: &str = "Review the user’s question and the corresponding response using the additive 5-point scoring system described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the response is relevant and provides some information related to the user’s inquiry, even if it is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user’s question, but does not completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user’s question in a useful way, regardless of whether it seems to have been written by an AI Assistant or if it has elements typically found in blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant’s perspective, addressing the user’s question directly and comprehensively, and is well-organized and helpful, even if there is slight room for improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user’s question by an AI Assistant, without extraneous information, reflecting expert knowledge, and demonstrating a high-quality, engaging, and insightful answer.

User: <INSTRUCTION_HERE>
<response><RESPONSE_HERE></response>

After examining the user’s instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: “Score: <total points>”

Remember to assess from the AI Assistant perspective, utilizing web search knowledge as necessary. To evaluate the response in alignment with this additive scoring model, we’ll systematically attribute points based on the outlined criteria.";

const INSTRUCTION_SLOT: &str = "<INSTRUCTION_HERE>";
const RESPONSE_SLOT: &str = "<RESPONSE_HERE>";

/// The judge prompt for one (instruction, response) pair (the user turn's text).
pub fn judge_prompt(instruction: &str, response: &str) -> String {
    // Fill the slots in one pass so a response that contains "<INSTRUCTION_HERE>" stays as is.
    let (head, tail) = JUDGE_PROMPT
        .split_once(INSTRUCTION_SLOT)
        .expect("slot present");
    let (mid, end) = tail.split_once(RESPONSE_SLOT).expect("slot present");
    format!("{head}{instruction}{mid}{response}{end}")
}

/// Characters allowed around the colon of `Score: N` (quotes, markdown emphasis, spaces).
fn is_decoration(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '“' | '”' | '‘' | '’' | '*' | '_' | '`')
}

/// The score a judgement gives: the last `Score: N` (case-insensitive; `N/5`, quotes and
/// markdown around it allowed) with N between 0 and 5; `None` when there is none.
pub fn parse_score(text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    // `to_lowercase` can change byte lengths outside ASCII; fall back to the original when so.
    let hay = if lower.len() == text.len() {
        lower.as_str()
    } else {
        text
    };
    let mut last = None;
    let mut from = 0;
    while let Some(i) = find_score_word(hay, from) {
        from = i + 5;
        if let Some(v) = score_after(&hay[i + 5..]) {
            last = Some(v);
        }
    }
    last
}

fn find_score_word(hay: &str, from: usize) -> Option<usize> {
    let rest = hay.get(from..)?;
    let lower_hit = rest.find("score");
    let upper_hit = rest.find("Score").or_else(|| rest.find("SCORE"));
    let hit = match (lower_hit, upper_hit) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(from + hit)
}

fn score_after(s: &str) -> Option<f64> {
    let s = s.trim_start_matches(is_decoration);
    let s = s.strip_prefix(':')?;
    let s = s.trim_start_matches(is_decoration);
    let end = s
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let num = s[..end].trim_end_matches('.');
    let v: f64 = num.parse().ok()?;
    let after = s[end..].trim_start();
    if let Some(den) = after.strip_prefix('/') {
        let den = den.trim_start();
        let d_end = den.find(|c: char| !c.is_ascii_digit()).unwrap_or(den.len());
        if den[..d_end] != *"5" {
            return None;
        }
    }
    (0.0..=5.0).contains(&v).then_some(v)
}

/// Settings for sampled judgements.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JudgeParams {
    /// Judgements sampled per response (the paper uses 3).
    pub samples: usize,
    pub sampling: SamplingParams,
}

impl Default for JudgeParams {
    fn default() -> Self {
        JudgeParams {
            samples: 3,
            sampling: SamplingParams {
                max_tokens: 256,
                ..SamplingParams::default()
            },
        }
    }
}

/// One sampled judgement.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JudgeSample {
    pub text: String,
    /// `None` when the text has no parseable score.
    pub score: Option<f64>,
}

/// The judgements of one response.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Judgement {
    pub samples: Vec<JudgeSample>,
    /// Mean of the parsed scores; `None` when no sample parsed.
    pub score: Option<f64>,
}

impl Judgement {
    /// The judgement of these sample texts: each parsed, the parsed ones averaged.
    pub fn from_texts(texts: Vec<String>) -> Self {
        let samples: Vec<JudgeSample> = texts
            .into_iter()
            .map(|text| JudgeSample {
                score: parse_score(&text),
                text,
            })
            .collect();
        let parsed: Vec<f64> = samples.iter().filter_map(|s| s.score).collect();
        let score = (!parsed.is_empty()).then(|| parsed.iter().sum::<f64>() / parsed.len() as f64);
        Judgement { samples, score }
    }
}

/// Expected score from the next-token distribution after "Score: ".
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DigitScore {
    /// Σ d·p(d) over d in 0..=5, with p renormalised over those six digits.
    pub expected: f64,
    /// p(d) renormalised over the digits 0..=5.
    pub probs: [f64; 6],
    /// Total probability the model put on the six digits (how much it "wanted" to answer).
    pub mass: f64,
}

/// A judge bound to a model, holding the KV state of the judge prompt's fixed prefix.
pub struct Judge<'m> {
    model: &'m Model,
    prefix: Prefix,
    digit_ids: [u32; 6],
}

impl<'m> Judge<'m> {
    /// Prefill the fixed part of the judge prompt (the chat template up to `User:`).
    pub fn new(model: &'m Model) -> Result<Self, ModelError> {
        let full = model.prompt(JUDGE_PROMPT)?;
        let cut = full.find("User: ").expect("judge prompt has `User: `") + "User:".len();
        let prefix = Prefix::new(model, model.encode(&full[..cut])?)?;
        let mut digit_ids = [0u32; 6];
        for (d, slot) in digit_ids.iter_mut().enumerate() {
            let ids = model.encode(&d.to_string())?;
            *slot = match ids.as_slice() {
                [id] => *id,
                _ => {
                    return Err(ModelError::Config {
                        path: model.path.clone(),
                        message: format!("digit {d} is not a single token"),
                    })
                }
            };
        }
        Ok(Judge {
            model,
            prefix,
            digit_ids,
        })
    }

    /// The chat-formatted judge prompt for a pair.
    pub fn text(&self, instruction: &str, response: &str) -> Result<String, ModelError> {
        self.model.prompt(&judge_prompt(instruction, response))
    }

    /// Sample `params.samples` judgements of `response` and average their scores.
    pub fn judge(
        &self,
        instruction: &str,
        response: &str,
        params: &JudgeParams,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Judgement, ModelError> {
        let gens = self.generations(instruction, response, params, progress)?;
        Ok(Judgement::from_texts(
            gens.into_iter().map(|g| g.text).collect(),
        ))
    }

    /// The `params.samples` sampled judgements of `response`, as generated.
    pub fn generations(
        &self,
        instruction: &str,
        response: &str,
        params: &JudgeParams,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Vec<Generation>, ModelError> {
        let text = self.text(instruction, response)?;
        generate_text(
            self.model,
            &text,
            params.samples,
            &params.sampling,
            Some(&self.prefix),
            progress,
        )
    }

    /// The sampling jobs of `items`, or the first pair whose prompt cannot be formatted.
    fn jobs<'a>(
        &'a self,
        items: &[(&str, &str)],
        params: &'a JudgeParams,
    ) -> (Vec<Job<'a>>, Option<(usize, ModelError)>) {
        let mut jobs = Vec::with_capacity(items.len());
        for (i, (ins, resp)) in items.iter().enumerate() {
            match self.text(ins, resp) {
                Ok(text) => jobs.push(Job {
                    text,
                    n: params.samples,
                    params: &params.sampling,
                    prefix: Some(&self.prefix),
                }),
                Err(e) => return (jobs, Some((i, e))),
            }
        }
        (jobs, None)
    }

    /// The sampled judgements of many pairs, up to `max_batch` sequences decoding together
    /// (the same texts as [`Judge::generations`] one pair at a time); `done` gets each pair's
    /// as it completes, in any order. After a pair fails no later pair starts.
    pub fn generations_batched(
        &self,
        items: &[(&str, &str)],
        params: &JudgeParams,
        max_batch: usize,
        progress: &mut dyn FnMut(Progress),
        done: &mut Done,
    ) {
        let (jobs, err) = self.jobs(items, params);
        batch::generate(self.model, &jobs, max_batch, progress, done);
        if let Some((i, e)) = err {
            done(i, Err(e));
        }
    }

    /// Judge many (instruction, response) pairs, batched; `progress` gets the index of the
    /// latest pair started.
    pub fn judge_all(
        &self,
        items: &[(String, String)],
        params: &JudgeParams,
        progress: &mut dyn FnMut(usize, Progress),
    ) -> Result<Vec<Judgement>, ModelError> {
        let pairs: Vec<(&str, &str)> = items
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let (jobs, err) = self.jobs(&pairs, params);
        if let Some((_, e)) = err {
            return Err(e);
        }
        let gens = batch::generate_all(self.model, &jobs, batch::DEFAULT_MAX_BATCH, &mut |p| {
            progress(p.prompt, p)
        })?;
        Ok(gens
            .into_iter()
            .map(|g| Judgement::from_texts(g.into_iter().map(|g| g.text).collect()))
            .collect())
    }

    /// One forward pass: the assistant's reply is started with "Score: " and the next-token
    /// distribution over the digits 0–5 gives an expected score.
    pub fn digit_score(&self, instruction: &str, response: &str) -> Result<DigitScore, ModelError> {
        let mut out = None;
        self.digit_scores(&[(instruction, response)], 1, &mut |_, r| out = Some(r));
        out.expect("one pair, one result")
    }

    /// [`Judge::digit_score`] of many pairs: up to `max_batch` of them (and a bounded number of
    /// tokens) prefilled per ragged pass, each after a fork of the shared prefix; the scores are
    /// the same bytes as one pair at a time. `done` gets each pair's score; after a pair fails
    /// no later pair is scored.
    pub fn digit_scores(
        &self,
        items: &[(&str, &str)],
        max_batch: usize,
        done: &mut dyn FnMut(usize, Result<DigitScore, ModelError>),
    ) {
        let (model, p) = (self.model, &self.prefix);
        let max = model.config.positions();
        let mut inputs = Vec::with_capacity(items.len());
        let mut failed = None;
        for (i, (ins, resp)) in items.iter().enumerate() {
            let ids = self
                .text(ins, resp)
                .and_then(|t| model.encode(&format!("{t}Score: ")));
            match ids {
                Ok(ids) if ids.len() > max => {
                    let len = ids.len();
                    failed = Some((i, ModelError::TooLong { len, max }));
                    break;
                }
                Ok(ids) => {
                    let skip = if ids.starts_with(&p.ids) && ids.len() > p.ids.len() {
                        p.ids.len()
                    } else {
                        0
                    };
                    inputs.push((ids, skip));
                }
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        let lens: Vec<usize> = inputs.iter().map(|(ids, skip)| ids.len() - skip).collect();
        for run in batch::runs(&lens, max_batch) {
            if let Err(e) = self.digit_run(&inputs[run.clone()], run.start, done) {
                return done(run.start, Err(e));
            }
        }
        if let Some((i, e)) = failed {
            done(i, Err(e));
        }
    }

    /// One ragged pass over `inputs` (ids, prefix tokens to skip), the first being pair `first`.
    fn digit_run(
        &self,
        inputs: &[(Vec<u32>, usize)],
        first: usize,
        done: &mut dyn FnMut(usize, Result<DigitScore, ModelError>),
    ) -> Result<(), ModelError> {
        let mut caches = Vec::with_capacity(inputs.len());
        for (ids, skip) in inputs {
            caches.push(if *skip > 0 {
                self.prefix.cache.fork(ids.len() - skip)?
            } else {
                KvCache::new(self.model)
            });
        }
        let mut rows: Vec<Step> = caches
            .iter_mut()
            .zip(inputs)
            .map(|(cache, (ids, skip))| Step {
                cache,
                tokens: &ids[*skip..],
            })
            .collect();
        let logits = self.model.forward_ragged(&mut rows)?;
        let v = self.model.config.vocab_size;
        for (k, row) in logits.chunks_exact(v).enumerate() {
            done(first + k, self.digits_of(row));
        }
        Ok(())
    }

    /// The digit score of one row of next-token logits.
    fn digits_of(&self, logits: &[f32]) -> Result<DigitScore, ModelError> {
        let logits = Tensor::from_slice(logits, logits.len(), self.model.device())?;
        let probs: Vec<f32> = candle_nn::ops::softmax_last_dim(&logits)?.to_vec1()?;
        let raw: Vec<f64> = self
            .digit_ids
            .iter()
            .map(|&i| probs[i as usize] as f64)
            .collect();
        let mass: f64 = raw.iter().sum();
        let mut out = [0f64; 6];
        for (o, r) in out.iter_mut().zip(&raw) {
            *o = if mass > 0.0 { r / mass } else { 0.0 };
        }
        let expected = out.iter().enumerate().map(|(d, p)| d as f64 * p).sum();
        Ok(DigitScore {
            expected,
            probs: out,
            mass,
        })
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
