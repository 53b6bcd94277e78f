//! The generation stages: `gen-prompts` (few-shot self-instruction) and `gen-responses`
//! (N candidates per prompt), both sampled from the model being iterated, in process or on a
//! server ([`crate::backend`]), every finished request journalled so a re-run resumes.
use serde::{Deserialize, Serialize};

use super::gen_prompts::{
    draw_examples, few_shot_request, GenPromptsMetrics, GenPromptsParams, PromptFilter,
};
use super::journal::{journalled, Journal};
use super::model_io::{backend, input, metrics_of, output, params, record_backend};
use super::record::{Metrics, Progress, StageFailure, StageIo};
use crate::backend::ChatRequest;
use crate::engine::generate::SamplingParams;

/// A generated prompt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptRow {
    pub prompt_id: String,
    pub prompt: String,
    pub source: String,
}

/// A candidate response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseRow {
    pub prompt_id: String,
    pub prompt: String,
    pub index: u32,
    pub response: String,
}

/// A prompt to answer: any JSONL row with a `prompt` (or `instruction`) field, its id optional
/// (a string or a number), as srlm's `gen-prompts`, the Python replications and TRL write
/// them; other fields are ignored.
#[derive(Debug, Deserialize)]
pub struct PromptInput {
    #[serde(default)]
    pub prompt_id: Option<serde_json::Value>,
    #[serde(alias = "instruction")]
    pub prompt: String,
}

/// Reads the prompts to answer; a row without an id is named by its position (`p00000`, …,
/// as `gen-prompts` names its own).
pub fn read_prompts(path: &std::path::Path) -> Result<Vec<PromptRow>, super::jsonl::JsonlError> {
    let rows: Vec<PromptInput> = super::jsonl::read(path)?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| PromptRow {
            prompt_id: match r.prompt_id {
                Some(serde_json::Value::String(s)) => s,
                Some(serde_json::Value::Null) | None => format!("p{i:05}"),
                Some(v) => v.to_string(),
            },
            prompt: r.prompt,
            source: String::new(),
        })
        .collect())
}

/// A seed row: any JSONL row with a `prompt` or `instruction` field.
#[derive(Debug, Deserialize)]
struct SeedRow {
    #[serde(alias = "instruction")]
    prompt: String,
}

/// At most this many requests per call to the backend.
const BATCH: usize = 8;

/// `gen-prompts`: inputs `model` (or a server in the parameters), `seeds`; output `prompts`.
pub fn gen_prompts(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let p: GenPromptsParams = params(io)?;
    let seeds: Vec<String> = super::jsonl::read::<SeedRow>(input(io, "seeds")?)?
        .into_iter()
        .map(|r| r.prompt)
        .collect();
    if seeds.is_empty() {
        return Err("the seed file has no prompt".into());
    }
    let backend = backend(io, "model")?;
    let mut journal = Journal::open(io.journal.as_deref())?;
    let mut filter = PromptFilter::new(&p, &seeds);
    let mut m = GenPromptsMetrics::default();
    let mut kept: Vec<PromptRow> = Vec::new();
    let max_attempts = p.count * p.max_attempts_per_prompt.max(1);
    while kept.len() < p.count && m.attempts < max_attempts {
        // As many requests as prompts still missing (a few more when the filter rejects).
        let n = BATCH
            .min(max_attempts - m.attempts)
            .min(p.count - kept.len());
        let sampling = SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            max_tokens: p.max_tokens,
            seed: p.seed.wrapping_add(m.attempts as u64),
            ..SamplingParams::default()
        };
        let requests: Vec<ChatRequest> = (0..n)
            .map(|k| ChatRequest {
                user: few_shot_request(&draw_examples(&seeds, p.shots, p.seed, m.attempts + k)),
                n: 1,
                sampling: sampling.clone(),
            })
            .collect();
        let keys: Vec<String> = (0..n)
            .map(|k| format!("attempt {}", m.attempts + k))
            .collect();
        let gens = journalled(
            &mut journal,
            &keys,
            &requests,
            |r, done| backend.chat(r, done),
            &mut |_| {},
        )?;
        m.attempts += n;
        for g in gens.into_iter().flatten() {
            if kept.len() >= p.count {
                break;
            }
            match filter.offer(&g.text) {
                Ok(prompt) => kept.push(PromptRow {
                    prompt_id: format!("p{:05}", kept.len()),
                    prompt,
                    source: "self-instruct".into(),
                }),
                Err(r) => m.count(r),
            }
        }
        let msg = format!("{} prompts kept", kept.len());
        (io.progress)(Progress {
            done: kept.len() as u64,
            total: p.count as u64,
            message: &msg,
        });
    }
    m.kept = kept.len();
    if kept.is_empty() {
        return Err(format!(
            "the model wrote no usable prompt in {} attempts",
            m.attempts
        )
        .into());
    }
    super::jsonl::write(output(io, "prompts")?, &kept)?;
    let mut out = metrics_of(&m);
    record_backend(io, backend.as_ref(), &journal, &mut out);
    Ok(out)
}

/// Parameters of `gen-responses` as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenResponsesParams {
    /// Candidates per prompt (paper: 4).
    pub n: usize,
    pub sampling: SamplingParams,
}

impl Default for GenResponsesParams {
    fn default() -> Self {
        GenResponsesParams {
            n: 4,
            sampling: SamplingParams {
                temperature: 0.7,
                top_p: 0.9,
                max_tokens: 256,
                ..SamplingParams::default()
            },
        }
    }
}

/// `gen-responses`: inputs `model` (or a server in the parameters), `prompts`; output
/// `responses`, ordered as the prompts are and by candidate index whatever order the
/// replies came in.
pub fn gen_responses(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let p: GenResponsesParams = params(io)?;
    let prompts = read_prompts(input(io, "prompts")?)?;
    let backend = backend(io, "model")?;
    let mut journal = Journal::open(io.journal.as_deref())?;
    let requests: Vec<ChatRequest> = prompts
        .iter()
        .map(|r| ChatRequest {
            user: r.prompt.clone(),
            n: p.n,
            sampling: p.sampling.clone(),
        })
        .collect();
    let keys: Vec<String> = prompts
        .iter()
        .enumerate()
        .map(|(i, r)| format!("prompt {} (row {})", r.prompt_id, i + 1))
        .collect();
    let total = prompts.len() as u64;
    let progress = &mut io.progress;
    let gens = journalled(
        &mut journal,
        &keys,
        &requests,
        |r, done| backend.chat(r, done),
        &mut |d| {
            progress(Progress {
                done: d as u64,
                total,
                message: "prompts answered",
            })
        },
    )?;
    let mut rows = Vec::new();
    let mut tokens = 0usize;
    for (pr, cands) in prompts.iter().zip(gens) {
        for (i, g) in cands.into_iter().enumerate() {
            tokens += g.tokens;
            rows.push(ResponseRow {
                prompt_id: pr.prompt_id.clone(),
                prompt: pr.prompt.clone(),
                index: i as u32,
                response: g.text.trim().to_string(),
            });
        }
    }
    super::jsonl::write(output(io, "responses")?, &rows)?;
    let mut m = Metrics::new();
    m.insert("prompts".into(), prompts.len().into());
    m.insert("responses".into(), rows.len().into());
    m.insert("generated_tokens".into(), tokens.into());
    m.insert(
        "mean_response_chars".into(),
        (rows
            .iter()
            .map(|r| r.response.chars().count())
            .sum::<usize>() as f64
            / rows.len().max(1) as f64)
            .into(),
    );
    record_backend(io, backend.as_ref(), &journal, &mut m);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_need_only_a_prompt() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\":\"a\"}\n{\"prompt_id\":\"x7\",\"prompt\":\"b\"}\n{\"prompt_id\":12,\"instruction\":\"c\",\"extra\":1}\n",
        )
        .unwrap();
        let rows = read_prompts(&p).unwrap();
        let ids: Vec<&str> = rows.iter().map(|r| r.prompt_id.as_str()).collect();
        assert_eq!(ids, ["p00000", "x7", "12"]);
        assert_eq!(rows[2].prompt, "c");
        std::fs::write(&p, "{\"prompt\":\"a\"}\n{\"id\":\"no prompt\"}\n").unwrap();
        let e = read_prompts(&p).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:2:") && e.contains("prompt"), "{e}");
    }
}
