//! The `import oasst2` stage: seed sets from OpenAssistant data.
//!
//! Reads the official OASST2 message-tree export (one message per line: `message_id`,
//! `parent_id`, `role`, `text`, `lang`, `rank`, `labels`…) or its flattened forms (ranked first
//! turns `question, answer, rank`; scored responses `prompt_id, prompt_text, response_id,
//! response_text, quality_score`) into threads (a first-turn prompt and its human-ranked
//! answers), then writes:
//! - IFT: every best human-ranked (rank-0) answer of a first turn, `{prompt, response}`;
//! - EFT: judge-prompt examples, `{prompt, response, score}` where `prompt` is the
//!   LLM-as-a-Judge prompt and `response` a justification ending in `Score: N`;
//! - EFT evaluation split: held-out threads, one row per human-scored response.
//!
//! IFT, EFT train and EFT evaluation prompts are disjoint: the EFT split is drawn by prompt
//! (threads asking the same question, up to whitespace and case, stay together), and IFT keeps
//! no rank-0 answer whose prompt is an EFT prompt. The default evaluation share is the paper's
//! ([`EVAL_FRACTION`]). On the two OASST2 files of `../shared/data/oasst2/` with no `--max-*`
//! and seed 0 that is IFT 738 rows (62 of the 800 rank-0 answers ask an EFT prompt), EFT train
//! 2,132 rows of 614 prompts, evaluation 656 rows of 184 prompts (23.06%; `tests/evaluation.rs`).
//! EFT targets come from the human quality score
//! (`--eft-from human`) or from a judging model whose score ordering must agree with the human
//! ranking for the whole thread (the paper's recipe).
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Row {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: unrecognised format (fields {fields}); expected an OASST2 message-tree export, ranked first turns (question, answer, rank) or scored responses (prompt_id, prompt_text, response_text, quality_score)")]
    Format { path: PathBuf, fields: String },
    #[error("no EFT example: the judging model judged {judged} responses in {threads} threads ({unparsed} without a parseable score) and agreed with the human ranking on none. A model that cannot judge yet cannot make EFT data: use `--eft-from human`")]
    NoEft {
        judged: usize,
        threads: usize,
        unparsed: usize,
    },
}

/// A first-turn prompt with its human-ranked answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub prompt_id: String,
    pub prompt: String,
    pub answers: Vec<Answer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub id: String,
    pub text: String,
    /// Human rank, 0 = best, where known.
    pub rank: Option<u32>,
    /// Human quality in 0..=1 (higher is better), where known.
    pub quality: Option<f64>,
}

pub use super::import_stage::{seed_stage, stage, BUILTIN_EFT, BUILTIN_IFT};
pub use super::oasst2::{read_threads, SourceFormat};

/// How EFT targets are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EftFrom {
    /// Target `Score: N` from the human quality score (N = round(5·quality)), with a
    /// justification naming the rubric criteria met.
    Human,
    /// The judging model's own judgements, kept where its ordering agrees with the humans'.
    Model,
}

/// The paper's share of EFT data held out for evaluation: 531 of 1,775 + 531 examples.
pub const EVAL_FRACTION: f64 = 0.23;

/// Parameters of the import (recorded in the run record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportParams {
    pub eft_from: EftFrom,
    /// Fraction of EFT prompts held out for evaluation ([`EVAL_FRACTION`] by default).
    pub eval_fraction: f64,
    pub max_ift: Option<usize>,
    pub max_eft: Option<usize>,
    pub max_eval: Option<usize>,
    pub seed: u64,
    pub lang: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IftRow {
    pub prompt: String,
    pub response: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EftRow {
    /// The LLM-as-a-Judge prompt with the instruction and response filled in.
    pub prompt: String,
    /// The judgement: a justification ending in `Score: N`.
    pub response: String,
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub prompt_id: String,
    pub prompt: String,
    pub response_id: String,
    pub response: String,
    pub quality_score: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportMetrics {
    pub ift_rows: usize,
    /// Rank-0 answers left out of IFT because their prompt is an EFT prompt.
    pub ift_dropped_overlap: usize,
    /// Distinct prompts (whitespace and case folded) of the EFT train and evaluation rows
    /// written.
    pub eft_prompts: usize,
    pub eval_prompts: usize,
    pub eft_rows: usize,
    pub eft_threads: usize,
    pub eval_rows: usize,
    pub eval_threads: usize,
    /// With `--eft-from model`: responses judged, unparsed scores, threads whose ordering agreed.
    pub judged: usize,
    pub unparsed: usize,
    pub agreeing_threads: usize,
}

pub struct Imported {
    pub ift: Vec<IftRow>,
    pub eft: Vec<EftRow>,
    pub eval: Vec<EvalRow>,
    pub metrics: ImportMetrics,
}

const CRITERIA: [&str; 5] = [
    "The response is relevant and provides some information related to the user’s inquiry.",
    "It addresses a substantial portion of the user’s question.",
    "It answers the basic elements of the user’s question in a useful way.",
    "It is clearly written from an AI Assistant’s perspective, addressing the question directly and comprehensively, and is well-organized and helpful.",
    "It is impeccably tailored to the user’s question, without extraneous information, reflecting expert knowledge.",
];

/// A justification for a human-derived score: the additive criteria met, then the score line.
pub fn human_judgement(score: u32) -> String {
    let s = score.min(5) as usize;
    let mut text = if s == 0 {
        "The response is not relevant to the user’s inquiry and provides no useful information."
            .to_string()
    } else {
        CRITERIA[..s].join(" ")
    };
    if (1..5).contains(&s) {
        text.push_str(" It does not meet the next criterion.");
    }
    format!("{text}\nScore: {s}")
}

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Human preference value of an answer: quality if known, else the negated rank.
fn human_value(a: &Answer) -> Option<f64> {
    a.quality.or(a.rank.map(|r| -(r as f64)))
}

/// A model's judgement of (instruction, response): its text and parsed score.
pub type JudgeFn<'a> = dyn FnMut(&str, &str) -> (String, Option<f64>) + 'a;

/// Builds the seed sets. `judge_prompt(instruction, response)` renders the LLM-as-a-Judge
/// prompt; `judge(instruction, response)` (needed for `EftFrom::Model`) returns the model's
/// judgement text and parsed score.
pub fn build(
    ift_threads: &[Thread],
    eft_threads: &[Thread],
    params: &ImportParams,
    judge_prompt: &dyn Fn(&str, &str) -> String,
    mut judge: Option<&mut JudgeFn>,
) -> Result<Imported, ImportError> {
    let mut m = ImportMetrics::default();
    // EFT threads: those with at least two answers that have a human value, grouped by prompt
    // text (two threads may ask the same question), so that the split is disjoint by prompt.
    let mut groups: Vec<Vec<&Thread>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for t in eft_threads.iter().filter(|t| {
        t.answers
            .iter()
            .filter(|a| human_value(a).is_some())
            .count()
            >= 2
    }) {
        let g = *group_of.entry(norm(&t.prompt)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(t);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(params.seed);
    groups.shuffle(&mut rng);
    let n_eval = ((groups.len() as f64) * params.eval_fraction).round() as usize;
    let (eval_groups, train_groups) = groups.split_at(n_eval.min(groups.len()));
    let eval_threads: Vec<&Thread> = eval_groups.iter().flatten().copied().collect();
    let train_threads: Vec<&Thread> = train_groups.iter().flatten().copied().collect();
    let eft_prompts: HashSet<String> = eft_threads.iter().map(|t| norm(&t.prompt)).collect();

    let mut ift = Vec::new();
    'ift: for t in ift_threads {
        // Ranked answers: every best human-ranked one (rank 0; a question asked in two trees
        // has two) is an IFT answer; a thread without a rank-0 answer gives none. Unranked,
        // scored answers: the best score.
        let best: Vec<&Answer> = if t.answers.iter().any(|a| a.rank.is_some()) {
            t.answers.iter().filter(|a| a.rank == Some(0)).collect()
        } else {
            t.answers
                .iter()
                .filter(|a| a.quality.is_some())
                .max_by(|a, b| {
                    human_value(a)
                        .partial_cmp(&human_value(b))
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .into_iter()
                .collect()
        };
        if best.is_empty() {
            continue;
        }
        if eft_prompts.contains(&norm(&t.prompt)) {
            m.ift_dropped_overlap += best.len();
            continue;
        }
        for a in best {
            ift.push(IftRow {
                prompt: t.prompt.clone(),
                response: a.text.clone(),
            });
            if params.max_ift.is_some_and(|n| ift.len() >= n) {
                break 'ift;
            }
        }
    }

    let mut eval = Vec::new();
    'eval: for t in eval_threads {
        m.eval_threads += 1;
        for a in &t.answers {
            if let Some(q) = a.quality {
                eval.push(EvalRow {
                    prompt_id: t.prompt_id.clone(),
                    prompt: t.prompt.clone(),
                    response_id: a.id.clone(),
                    response: a.text.clone(),
                    quality_score: q,
                });
                if params.max_eval.is_some_and(|n| eval.len() >= n) {
                    break 'eval;
                }
            }
        }
    }

    let mut eft_rows = Vec::new();
    let mut train_prompts = HashSet::new();
    let full = |rows: &Vec<EftRow>| params.max_eft.is_some_and(|n| rows.len() >= n);
    for t in &train_threads {
        if full(&eft_rows) {
            break;
        }
        match params.eft_from {
            EftFrom::Human => {
                m.eft_threads += 1;
                train_prompts.insert(norm(&t.prompt));
                for a in &t.answers {
                    let Some(q) = a.quality else { continue };
                    if full(&eft_rows) {
                        break;
                    }
                    let s = (q.clamp(0.0, 1.0) * 5.0).round() as u32;
                    eft_rows.push(EftRow {
                        prompt: judge_prompt(&t.prompt, &a.text),
                        response: human_judgement(s),
                        score: s as f64,
                    });
                }
            }
            EftFrom::Model => {
                let judge = judge.as_mut().expect("EftFrom::Model needs a judge");
                let mut judged = Vec::new();
                for a in t.answers.iter().filter(|a| human_value(a).is_some()) {
                    let (text, score) = judge(&t.prompt, &a.text);
                    m.judged += 1;
                    if score.is_none() {
                        m.unparsed += 1;
                    }
                    judged.push((a, text, score));
                }
                if agrees(&judged) {
                    m.agreeing_threads += 1;
                    m.eft_threads += 1;
                    train_prompts.insert(norm(&t.prompt));
                    for (a, text, score) in judged {
                        eft_rows.push(EftRow {
                            prompt: judge_prompt(&t.prompt, &a.text),
                            response: text,
                            score: score.expect("agreeing threads have every score"),
                        });
                    }
                }
            }
        }
    }
    if eft_rows.is_empty() && params.eft_from == EftFrom::Model && !train_threads.is_empty() {
        return Err(ImportError::NoEft {
            judged: m.judged,
            threads: train_threads.len(),
            unparsed: m.unparsed,
        });
    }
    m.ift_rows = ift.len();
    m.eft_rows = eft_rows.len();
    m.eval_rows = eval.len();
    m.eft_prompts = train_prompts.len();
    m.eval_prompts = eval
        .iter()
        .map(|r| norm(&r.prompt))
        .collect::<HashSet<_>>()
        .len();
    Ok(Imported {
        ift,
        eft: eft_rows,
        eval,
        metrics: m,
    })
}

/// True when every pair of answers the humans order strictly is ordered the same way by the
/// model's scores (and every score parsed).
fn agrees(judged: &[(&Answer, String, Option<f64>)]) -> bool {
    if judged.iter().any(|j| j.2.is_none()) {
        return false;
    }
    for (i, a) in judged.iter().enumerate() {
        for b in &judged[i + 1..] {
            let (ha, hb) = (human_value(a.0).unwrap(), human_value(b.0).unwrap());
            let (sa, sb) = (a.2.unwrap(), b.2.unwrap());
            if ha != hb && (ha > hb) != (sa > sb) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
