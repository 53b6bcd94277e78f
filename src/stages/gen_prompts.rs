//! The `gen-prompts` stage: few-shot self-instruction. The model being iterated sees 8
//! examples drawn from the seed prompts and writes a new one; candidates are cleaned,
//! length-filtered and dropped when they nearly duplicate a seed or an earlier prompt
//! (ROUGE-L over words, as Self-Instruct filters).
use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// Parameters of prompt generation (recorded in the run record).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenPromptsParams {
    /// How many new prompts to keep.
    pub count: usize,
    /// Few-shot examples per request (paper: 8).
    pub shots: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
    pub seed: u64,
    /// Give up after this many generation attempts per kept prompt.
    pub max_attempts_per_prompt: usize,
    pub min_chars: usize,
    pub max_chars: usize,
    /// Candidates whose ROUGE-L F-measure with a seed or earlier prompt reaches this are dropped.
    pub max_rouge_l: f64,
}

impl Default for GenPromptsParams {
    fn default() -> Self {
        GenPromptsParams {
            count: 100,
            shots: 8,
            temperature: 0.6,
            top_p: 0.9,
            max_tokens: 96,
            seed: 0,
            max_attempts_per_prompt: 4,
            min_chars: 10,
            max_chars: 500,
            max_rouge_l: 0.7,
        }
    }
}

/// The few-shot request shown to the model (as the user turn of its chat template).
pub fn few_shot_request(examples: &[&str]) -> String {
    let mut s = String::from(
        "Come up with a new task or question that a person would ask an AI assistant. \
         Here are some examples:\n\n",
    );
    for e in examples {
        s.push_str("Task: ");
        s.push_str(e.trim());
        s.push('\n');
    }
    s.push_str(
        "\nWrite one new task, different from the examples. Only the task itself, no answer \
         and no explanation.",
    );
    s
}

/// Turns a model's reply into a prompt: drops a leading `Task:`/number, surrounding quotes,
/// and anything after the first blank line. `None` if nothing usable is left.
pub fn clean(reply: &str) -> Option<String> {
    let mut t = reply.trim();
    let para_end = t.find("\n\n").unwrap_or(t.len());
    t = t[..para_end].trim();
    for prefix in ["Task:", "task:", "New task:", "TASK:"] {
        if let Some(rest) = t.strip_prefix(prefix) {
            t = rest.trim();
        }
    }
    let t = t
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.' || c == ')')
        .trim();
    let t = t.trim_matches(|c| c == '"' || c == '“' || c == '”').trim();
    // A reply that goes on to list another "Task:" keeps only the first.
    let t = match t.find("\nTask:") {
        Some(i) => t[..i].trim(),
        None => t,
    };
    (!t.is_empty()).then(|| t.to_string())
}

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// ROUGE-L F-measure over lower-cased words (longest common subsequence).
pub fn rouge_l(a: &str, b: &str) -> f64 {
    let (a, b) = (words(a), words(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut prev = vec![0usize; b.len() + 1];
    for wa in &a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, wb) in b.iter().enumerate() {
            cur[j + 1] = if wa == wb {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        prev = cur;
    }
    let lcs = prev[b.len()] as f64;
    let (p, r) = (lcs / b.len() as f64, lcs / a.len() as f64);
    if lcs == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    }
}

/// Why a candidate was dropped (counted in the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    Empty,
    Length,
    Duplicate,
    NearDuplicate,
}

/// Keeps the accepted prompts and decides on new candidates.
pub struct PromptFilter<'a> {
    params: &'a GenPromptsParams,
    seen: HashSet<String>,
    pool: Vec<String>,
}

impl<'a> PromptFilter<'a> {
    pub fn new(params: &'a GenPromptsParams, seeds: &[String]) -> Self {
        PromptFilter {
            params,
            seen: seeds.iter().map(|s| words(s).join(" ")).collect(),
            pool: seeds.to_vec(),
        }
    }

    /// Accepts (and remembers) a cleaned candidate, or says why not.
    pub fn offer(&mut self, reply: &str) -> Result<String, Reject> {
        let Some(p) = clean(reply) else {
            return Err(Reject::Empty);
        };
        let n = p.chars().count();
        if n < self.params.min_chars || n > self.params.max_chars {
            return Err(Reject::Length);
        }
        if !self.seen.insert(words(&p).join(" ")) {
            return Err(Reject::Duplicate);
        }
        if self
            .pool
            .iter()
            .any(|q| rouge_l(&p, q) >= self.params.max_rouge_l)
        {
            return Err(Reject::NearDuplicate);
        }
        self.pool.push(p.clone());
        Ok(p)
    }
}

/// Draws the few-shot examples for request number `i` (seeded, so replays draw the same).
pub fn draw_examples(seeds: &[String], shots: usize, seed: u64, i: usize) -> Vec<&str> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let mut v: Vec<&str> = seeds.iter().map(String::as_str).collect();
    v.shuffle(&mut rng);
    v.truncate(shots);
    v
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GenPromptsMetrics {
    pub kept: usize,
    pub attempts: usize,
    pub rejected_empty: usize,
    pub rejected_length: usize,
    pub rejected_duplicate: usize,
    pub rejected_near_duplicate: usize,
}

impl GenPromptsMetrics {
    pub fn count(&mut self, r: Reject) {
        match r {
            Reject::Empty => self.rejected_empty += 1,
            Reject::Length => self.rejected_length += 1,
            Reject::Duplicate => self.rejected_duplicate += 1,
            Reject::NearDuplicate => self.rejected_near_duplicate += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(
            clean("Task: Name a fruit.\n\nAnswer: apple").as_deref(),
            Some("Name a fruit.")
        );
        assert_eq!(
            clean("  \"Write a poem.\" ").as_deref(),
            Some("Write a poem.")
        );
        assert_eq!(
            clean("3. List colours.\nTask: another").as_deref(),
            Some("List colours.")
        );
        assert_eq!(clean("   "), None);
    }

    #[test]
    fn rouge() {
        assert!((rouge_l("a b c d", "a b c d") - 1.0).abs() < 1e-12);
        assert_eq!(rouge_l("a b", "c d"), 0.0);
        let r = rouge_l("name three primary colours", "name three colours");
        assert!(r > 0.8 && r < 1.0, "{r}");
    }

    #[test]
    fn filter_drops_duplicates_and_near_duplicates() {
        let p = GenPromptsParams::default();
        let seeds = vec!["What is the capital of France?".to_string()];
        let mut f = PromptFilter::new(&p, &seeds);
        assert_eq!(
            f.offer("what is the capital of france"),
            Err(Reject::Duplicate)
        );
        assert_eq!(
            f.offer("What is the capital city of France?"),
            Err(Reject::NearDuplicate)
        );
        assert_eq!(f.offer("short"), Err(Reject::Length));
        assert!(f.offer("Describe how a bicycle gear works.").is_ok());
        assert_eq!(
            f.offer("Describe how a bicycle gear works."),
            Err(Reject::Duplicate)
        );
    }

    #[test]
    fn examples_are_seeded() {
        let seeds: Vec<String> = (0..20).map(|i| format!("seed {i}")).collect();
        assert_eq!(
            draw_examples(&seeds, 8, 7, 3),
            draw_examples(&seeds, 8, 7, 3)
        );
        assert_ne!(
            draw_examples(&seeds, 8, 7, 3),
            draw_examples(&seeds, 8, 7, 4)
        );
        assert_eq!(draw_examples(&seeds, 8, 7, 0).len(), 8);
    }
}
