//! Log-probabilities of a response given a chat-formatted prompt: the quantity DPO optimises
//! (summed over response tokens only) and what `srlm logprob` prints.
use candle_core::{Device, Tensor};
use serde::Serialize;

use super::chat::ChatTemplate;
use super::config::ModelConfig;
use super::dense::{Dense, DenseError};
use super::llama::Llama;
use super::tokenizer;

/// Errors computing log-probabilities.
#[derive(Debug, thiserror::Error)]
pub enum LogprobError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Chat(#[from] super::chat::ChatError),
    #[error("the response encodes to no tokens")]
    EmptyResponse,
    #[error("the prompt encodes to no tokens")]
    EmptyPrompt,
    #[error("sequence of {len} tokens exceeds the model's {max} positions")]
    TooLong { len: usize, max: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A tokenized example: `ids[start..]` is the response, `ids[..start]` the formatted prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub start: usize,
}

impl Encoded {
    /// Number of response tokens.
    pub fn response_len(&self) -> usize {
        self.ids.len() - self.start
    }
}

/// Turns (prompt, response) text into token ids with the model's chat template: the prompt as
/// one user turn plus the assistant header ([`ChatTemplate::prompt`]), then the response and
/// the end of its turn as the template renders them ([`ChatTemplate::response_text`]). Prompt and response are
/// tokenized separately so the boundary is exact.
#[derive(Clone)]
pub struct Encoder {
    pub tokenizer: tokenizers::Tokenizer,
    pub template: ChatTemplate,
}

impl Encoder {
    fn encode_text(&self, text: &str) -> Result<Vec<u32>, LogprobError> {
        tokenizer::encode(&self.tokenizer, text).map_err(|e| LogprobError::Tokenizer(e.to_string()))
    }

    /// Encode one example.
    pub fn encode(&self, prompt: &str, response: &str) -> Result<Encoded, LogprobError> {
        let mut ids = self.encode_text(&self.template.prompt(prompt)?)?;
        if ids.is_empty() {
            return Err(LogprobError::EmptyPrompt);
        }
        let start = ids.len();
        let resp = self.encode_text(&self.template.response_text(prompt, response)?)?;
        if resp.is_empty() {
            return Err(LogprobError::EmptyResponse);
        }
        ids.extend(resp);
        Ok(Encoded { ids, start })
    }

    /// The text of one token id (for per-token reports; special tokens spelled out).
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }
}

/// Per-token log-probabilities of `ex.ids[ex.start..]`, shape `(response_len,)`,
/// differentiable with respect to the model's parameters.
pub fn response_token_logprobs(model: &Llama, ex: &Encoded) -> Result<Tensor, LogprobError> {
    token_logprobs(model, &ex.ids, ex.start, &ex.ids[ex.start..])
}

/// Log-probabilities of `targets[k]` at position `start - 1 + k` given `ids` (targets are
/// normally `ids[start..]`; SFT's masking test passes others). The lm-head runs at the
/// response positions only: the prompt's logits are never needed.
pub fn token_logprobs(
    model: &Llama,
    ids: &[u32],
    start: usize,
    targets: &[u32],
) -> Result<Tensor, LogprobError> {
    let n = check(model, ids, start)?;
    if targets.len() != n {
        return Err(LogprobError::Tokenizer(format!(
            "{} targets for {n} positions",
            targets.len()
        )));
    }
    let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    let hidden = model.hidden(&input)?.squeeze(0)?.narrow(0, start - 1, n)?;
    Ok(model.logprobs_from_hidden(&hidden, targets)?)
}

fn check(model: &Llama, ids: &[u32], start: usize) -> Result<usize, LogprobError> {
    check_sequence(&model.cfg, ids, start)
}

/// The number of response tokens of `ids[start..]`, or why a model with `cfg` cannot
/// score them.
pub(crate) fn check_sequence(
    cfg: &ModelConfig,
    ids: &[u32],
    start: usize,
) -> Result<usize, LogprobError> {
    let t = ids.len();
    if start == 0 {
        return Err(LogprobError::EmptyPrompt);
    }
    if start >= t {
        return Err(LogprobError::EmptyResponse);
    }
    let max = cfg.positions();
    if t > max {
        return Err(LogprobError::TooLong { len: t, max });
    }
    let vocab = cfg.vocab_size;
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(LogprobError::Tokenizer(format!(
            "token id {id} is outside the model's vocabulary of {vocab}"
        )));
    }
    Ok(t - start)
}

/// [`response_token_logprobs`] of several examples from one forward pass over a right-padded
/// batch (a DPO pair: chosen and rejected share each weight matrix's pass and gradient).
/// Padding follows each sequence, so causal attention keeps it out of the real positions.
pub fn batch_response_logprobs(
    model: &Llama,
    exs: &[&Encoded],
) -> Result<Vec<Tensor>, LogprobError> {
    let lens = exs
        .iter()
        .map(|e| check(model, &e.ids, e.start))
        .collect::<Result<Vec<_>, _>>()?;
    let t = exs.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(exs.len() * t);
    let (mut rows, mut targets) = (vec![], vec![]);
    for (b, e) in exs.iter().enumerate() {
        rows.extend((e.start - 1..e.ids.len() - 1).map(|p| (b * t + p) as u32));
        targets.extend_from_slice(&e.ids[e.start..]);
        ids.extend_from_slice(&e.ids);
        ids.resize((b + 1) * t, 0);
    }
    let input = Tensor::from_vec(ids, (exs.len(), t), &Device::Cpu)?;
    let hidden = model.hidden(&input)?;
    let d = hidden.dim(2)?;
    let rows = Tensor::from_vec(rows, targets.len(), &Device::Cpu)?;
    let hidden = hidden.reshape(((), d))?.index_select(&rows, 0)?;
    let all = model.logprobs_from_hidden(&hidden, &targets)?;
    let mut out = Vec::with_capacity(exs.len());
    let mut at = 0;
    for n in lens {
        out.push(all.narrow(0, at, n)?);
        at += n;
    }
    Ok(out)
}

/// One response token's log-probability.
#[derive(Debug, Clone, Serialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub text: String,
    pub logprob: f32,
}

/// Sum of f32 log-probs in f64, in order (what DPO and `srlm logprob` report).
pub(crate) fn sum_f64(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum()
}

/// The summed log-probability of a response and its per-token values.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseLogprob {
    pub sum: f64,
    pub prompt_tokens: usize,
    pub tokens: Vec<TokenLogprob>,
}

/// Score a response (no gradient kept): what `srlm logprob` prints, computed by the model
/// training uses, so it is exactly DPO's quantity.
pub fn score(
    model: &Dense,
    enc: &Encoder,
    prompt: &str,
    response: &str,
) -> Result<ResponseLogprob, LogprobError> {
    let ex = enc.encode(prompt, response)?;
    let (mut lp, _) = model.forward(&[&ex], false).map_err(|e| match e {
        DenseError::Sequence { source, .. } => source,
        e => LogprobError::Candle(candle_core::Error::wrap(e)),
    })?;
    let lp = lp.swap_remove(0);
    let tokens: Vec<TokenLogprob> = ex.ids[ex.start..]
        .iter()
        .zip(&lp)
        .map(|(&id, &logprob)| TokenLogprob {
            id,
            text: enc.token_text(id),
            logprob,
        })
        .collect();
    Ok(ResponseLogprob {
        sum: sum_f64(&lp),
        prompt_tokens: ex.start,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::llama::{tests::tiny, Trainable};

    #[test]
    fn response_logprobs_equal_full_forward_log_softmax() {
        let (cfg, w) = tiny(11);
        let model = Llama::new(&cfg, &w, &Trainable::None).unwrap();
        let ex = Encoded {
            ids: vec![5, 9, 13, 2, 40, 41, 7],
            start: 4,
        };
        let got: Vec<f32> = response_token_logprobs(&model, &ex)
            .unwrap()
            .to_vec1()
            .unwrap();
        let ids = Tensor::new(ex.ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits: Vec<Vec<f32>> = model
            .forward(&ids)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(got.len(), 3);
        for (k, pos) in (ex.start..ex.ids.len()).enumerate() {
            let row = &logits[pos - 1];
            let m = row.iter().cloned().fold(f32::MIN, f32::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
            let want = row[ex.ids[pos] as usize] - lse;
            assert!(
                (got[k] - want).abs() < 1e-4,
                "token {k}: {} vs {want}",
                got[k]
            );
        }
    }

    #[test]
    fn batch_equals_one_at_a_time() {
        let (cfg, w) = tiny(12);
        let model = Llama::new(&cfg, &w, &Trainable::None).unwrap();
        let a = Encoded {
            ids: vec![5, 9, 13, 2, 40, 41, 7, 30, 31],
            start: 4,
        };
        let b = Encoded {
            ids: vec![5, 9, 13, 2, 50, 7],
            start: 3,
        };
        let got = batch_response_logprobs(&model, &[&a, &b]).unwrap();
        for (e, g) in [&a, &b].into_iter().zip(&got) {
            let want = response_token_logprobs(&model, e).unwrap();
            assert_eq!(g.dims(), want.dims());
            let d = crate::engine::llama::tests::max_abs_diff(g, &want);
            assert!(d < 1e-5, "batched log-probs differ by {d}");
        }
    }

    #[test]
    fn rejects_empty_parts() {
        let (cfg, w) = tiny(11);
        let model = Llama::new(&cfg, &w, &Trainable::None).unwrap();
        let e = response_token_logprobs(
            &model,
            &Encoded {
                ids: vec![1, 2],
                start: 2,
            },
        );
        assert!(matches!(e, Err(LogprobError::EmptyResponse)));
        let e = response_token_logprobs(
            &model,
            &Encoded {
                ids: vec![1, 2],
                start: 0,
            },
        );
        assert!(matches!(e, Err(LogprobError::EmptyPrompt)));
    }
}
