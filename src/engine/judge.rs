//! LLM-as-a-Judge: the paper's additive 5-point prompt (verbatim, curly quotes kept), robust
//! `Score: N` parsing, k sampled judgements per response averaged as floats, and a one-pass
//! score from the next-token distribution over the digits 0–5 after "Score: ". The KV state of
//! the prompt's fixed prefix is computed once and reused for every judgement.
use candle_core::Tensor;

use super::generate::{generate_text, Generation, Prefix, Progress, SamplingParams};
use super::model::{KvCache, Model, ModelError};

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

    /// Judge many (instruction, response) pairs.
    pub fn judge_all(
        &self,
        items: &[(String, String)],
        params: &JudgeParams,
        progress: &mut dyn FnMut(usize, Progress),
    ) -> Result<Vec<Judgement>, ModelError> {
        items
            .iter()
            .enumerate()
            .map(|(i, (ins, resp))| self.judge(ins, resp, params, &mut |p| progress(i, p)))
            .collect()
    }

    /// One forward pass: the assistant's reply is started with "Score: " and the next-token
    /// distribution over the digits 0–5 gives an expected score.
    pub fn digit_score(&self, instruction: &str, response: &str) -> Result<DigitScore, ModelError> {
        let text = format!("{}Score: ", self.text(instruction, response)?);
        let ids = self.model.encode(&text)?;
        let p = &self.prefix;
        let (mut cache, rest) = if ids.starts_with(&p.ids) && ids.len() > p.ids.len() {
            (p.cache.fork(ids.len() - p.ids.len())?, &ids[p.ids.len()..])
        } else {
            (KvCache::new(self.model), &ids[..])
        };
        let t = Tensor::new(rest, self.model.device())?.unsqueeze(0)?;
        let logits = self.model.forward(&t, &mut cache)?.squeeze(0)?;
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
mod tests {
    use super::*;
    use crate::engine::fixture::write_tiny_model;
    use crate::engine::model::{load, WeightMode};

    #[test]
    fn parses_scores_robustly() {
        let cases: &[(&str, Option<f64>)] = &[
            ("Score: 4", Some(4.0)),
            ("score: 4", Some(4.0)),
            ("SCORE: 2", Some(2.0)),
            ("Score: 4/5", Some(4.0)),
            ("Score: 4 / 5", Some(4.0)),
            ("“Score: 3”", Some(3.0)),
            ("\"Score: 5\"", Some(5.0)),
            ("**Score:** 2", Some(2.0)),
            ("Score:3", Some(3.0)),
            (
                "The response is fine.\nScore: 1\nActually, Score: 2",
                Some(2.0),
            ),
            ("Total score: 0", Some(0.0)),
            ("Score: 3.5", Some(3.5)),
            ("Score: 4.", Some(4.0)),
            ("Score: <total points>", None),
            ("Score: 7", None),
            ("Score: 8/10", None),
            ("I give it four points.", None),
            ("", None),
            ("Score: 3 then Score: nonsense", Some(3.0)),
            ("ÜBER gut. Score: 5", Some(5.0)),
            ("Scores: 4", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_score(text), *want, "{text:?}");
        }
    }

    #[test]
    fn prompt_is_verbatim_and_slots_filled_once() {
        assert!(JUDGE_PROMPT.contains("user’s question"));
        assert!(JUDGE_PROMPT.contains("“Score: <total points>”"));
        let p = judge_prompt("What is 2+2?", "It is <INSTRUCTION_HERE> 4.");
        assert!(p.contains("User: What is 2+2?\n<response>It is <INSTRUCTION_HERE> 4.</response>"));
        assert!(!p.contains(RESPONSE_SLOT));
    }

    #[test]
    fn averages_parsed_samples_and_keeps_unparsed_as_none() {
        let j = Judgement::from_texts(vec!["Score: 4".into(), "no idea".into(), "Score: 3".into()]);
        assert_eq!(j.score, Some(3.5));
        assert_eq!(j.samples[1].score, None);
        assert_eq!(j.samples[1].text, "no idea");
        let none = Judgement::from_texts(vec!["meh".into(), "hmm".into()]);
        assert_eq!(none.score, None);
    }

    #[test]
    fn judges_on_the_tiny_model() {
        let t = tempfile::tempdir().unwrap();
        write_tiny_model(t.path(), 2).unwrap();
        let m = load(t.path(), WeightMode::Auto).unwrap();
        let judge = Judge::new(&m).unwrap();
        let params = JudgeParams {
            samples: 3,
            sampling: SamplingParams {
                max_tokens: 8,
                seed: 3,
                ..SamplingParams::default()
            },
        };
        let a = judge
            .judge("What is 2+2?", "4", &params, &mut |_| {})
            .unwrap();
        let b = judge
            .judge("What is 2+2?", "4", &params, &mut |_| {})
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.samples.len(), 3);
        // Whatever the random model writes, the score is exactly what the parser finds.
        for s in &a.samples {
            assert_eq!(s.score, parse_score(&s.text));
        }
        let d = judge.digit_score("What is 2+2?", "4").unwrap();
        assert!((d.probs.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        assert!((0.0..=5.0).contains(&d.expected));
        assert!(d.mass > 0.0 && d.mass <= 1.0);
        // The prefix reuse gives the same distribution as a fresh full pass, up to the 8-bit
        // rounding of activations (a last-bit difference upstream can flip one rounding).
        let text = format!("{}Score: ", judge.text("What is 2+2?", "4").unwrap());
        let ids = m.encode(&text).unwrap();
        let tt = Tensor::new(ids.as_slice(), m.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let full = m
            .forward(&tt, &mut KvCache::new(&m))
            .unwrap()
            .squeeze(0)
            .unwrap();
        let p: Vec<f32> = candle_nn::ops::softmax_last_dim(&full)
            .unwrap()
            .to_vec1()
            .unwrap();
        let p4 = p[m.encode("4").unwrap()[0] as usize] as f64;
        assert!((p4 / d.mass - d.probs[4]).abs() < 5e-3);
    }
}
