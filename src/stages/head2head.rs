//! The `head2head` stage: instruction following of two models compared by a fixed judge, as in
//! the paper's Table 1 (M(t+1) against M(t), win / tie / loss).
//!
//! Each model answers every held-out prompt once with the same sampling parameters and seed
//! (a candidate's random stream comes from the seed and the prompt, so both models draw the
//! same one), in process. A fixed judge, named by the user (a model in process, or a server),
//! then scores each response on its own with the paper's additive 5-point prompt (sampled
//! judgements averaged, or the digit judge). Scoring each response alone has no position bias
//! to cancel, unlike a pairwise prompt that shows both. From A's side, a prompt is a **win**
//! when A's score is higher, a **loss** when lower, a **tie** when equal (exactly: the mean of
//! the sampled scores, or the digit judge's expected score); a prompt where either score did
//! not parse is **unjudged**, reported and left out of the percentages. Each percentage has a
//! Wilson 95% interval over the judged prompts.
//!
//! Prompts are read as `gen-responses` reads them; rows repeating a prompt's text (the EFT
//! evaluation split has one row per human response) are one prompt.
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::generate::read_prompts;
use super::journal::{journalled, Journal};
use super::judge::{verdicts, JudgeStageParams};
use super::model_io::{backend, input, model_path, output, params};
use super::record::{Metrics, Progress, StageFailure, StageIo};
use super::stats::wilson;
use crate::backend::local::Local;
use crate::backend::{Backend, ChatRequest, JudgeRequest};
use crate::engine::generate::SamplingParams;

/// Parameters of `head2head` as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head2HeadParams {
    /// The first this many distinct prompts of the file (fewer when it has fewer).
    pub n_prompts: usize,
    /// Both models' sampling (one response per prompt each, the same seed).
    pub sampling: SamplingParams,
    /// How the judge scores a response.
    pub judge: JudgeStageParams,
}

impl Default for Head2HeadParams {
    fn default() -> Self {
        Head2HeadParams {
            n_prompts: 100,
            sampling: SamplingParams {
                temperature: 0.7,
                top_p: 0.9,
                max_tokens: 256,
                ..SamplingParams::default()
            },
            judge: JudgeStageParams::default(),
        }
    }
}

/// A's result on one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Win,
    Tie,
    Loss,
    /// A score did not parse.
    Unjudged,
}

impl Outcome {
    /// A's result from the two scores.
    pub fn of(a: Option<f64>, b: Option<f64>) -> Outcome {
        match (a, b) {
            (Some(a), Some(b)) if a > b => Outcome::Win,
            (Some(a), Some(b)) if a < b => Outcome::Loss,
            (Some(_), Some(_)) => Outcome::Tie,
            _ => Outcome::Unjudged,
        }
    }
}

/// One prompt's comparison (the stage's output row).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head2HeadRow {
    pub prompt_id: String,
    pub prompt: String,
    pub response_a: String,
    pub response_b: String,
    pub score_a: Option<f64>,
    pub score_b: Option<f64>,
    pub outcome: Outcome,
    pub judgements_a: Vec<String>,
    pub judgements_b: Vec<String>,
}

/// Win / tie / loss counts and shares with Wilson 95% intervals (flat, as the run's metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Head2HeadMetrics {
    pub prompts: usize,
    /// Prompts with both scores parsed: the base of the shares.
    pub judged: usize,
    pub unjudged: usize,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    pub win: Option<f64>,
    pub win_lo: Option<f64>,
    pub win_hi: Option<f64>,
    pub tie: Option<f64>,
    pub tie_lo: Option<f64>,
    pub tie_hi: Option<f64>,
    pub loss: Option<f64>,
    pub loss_lo: Option<f64>,
    pub loss_hi: Option<f64>,
    /// Mean judge score of each model's responses (over parsed scores).
    pub mean_score_a: Option<f64>,
    pub mean_score_b: Option<f64>,
}

/// The counts, shares and intervals of `rows`.
pub fn tally(rows: &[Head2HeadRow]) -> Head2HeadMetrics {
    let count = |o: Outcome| rows.iter().filter(|r| r.outcome == o).count();
    let (wins, ties, losses) = (
        count(Outcome::Win),
        count(Outcome::Tie),
        count(Outcome::Loss),
    );
    let judged = wins + ties + losses;
    let share = |k: usize| {
        let i = wilson(k, judged);
        (
            (judged > 0).then(|| k as f64 / judged as f64),
            i.map(|i| i.lo),
            i.map(|i| i.hi),
        )
    };
    let mean = |f: fn(&Head2HeadRow) -> Option<f64>| {
        let v: Vec<f64> = rows.iter().filter_map(f).collect();
        super::stats::mean(&v)
    };
    let (win, win_lo, win_hi) = share(wins);
    let (tie, tie_lo, tie_hi) = share(ties);
    let (loss, loss_lo, loss_hi) = share(losses);
    Head2HeadMetrics {
        prompts: rows.len(),
        judged,
        unjudged: rows.len() - judged,
        wins,
        ties,
        losses,
        win,
        win_lo,
        win_hi,
        tie,
        tie_lo,
        tie_hi,
        loss,
        loss_lo,
        loss_hi,
        mean_score_a: mean(|r| r.score_a),
        mean_score_b: mean(|r| r.score_b),
    }
}

/// `head2head`: inputs `a`, `b` (the models compared, in process), `judge` (a model, or a
/// server in the parameters), `prompts`; output `verdicts`.
pub fn stage(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let p: Head2HeadParams = params(io)?;
    let mut seen = HashSet::new();
    let prompts: Vec<_> = read_prompts(input(io, "prompts")?)?
        .into_iter()
        .filter(|r| seen.insert(r.prompt.clone()))
        .take(p.n_prompts)
        .collect();
    if prompts.is_empty() {
        return Err("the prompts file has no prompt".into());
    }
    let n = prompts.len();
    let total = 4 * n as u64;
    let mut journal = Journal::open(io.journal.as_deref())?;
    let mut engines = serde_json::Map::new();
    let mut m = Metrics::new();
    let mut answers: Vec<Vec<String>> = Vec::new();
    for (k, side) in ["a", "b"].into_iter().enumerate() {
        // one model in memory at a time
        let model = Local::open(&model_path(io, side)?.path)?;
        let requests: Vec<ChatRequest> = prompts
            .iter()
            .map(|r| ChatRequest {
                user: r.prompt.clone(),
                n: 1,
                sampling: p.sampling.clone(),
            })
            .collect();
        let keys: Vec<String> = prompts
            .iter()
            .map(|r| format!("{side}: prompt {}", r.prompt_id))
            .collect();
        let message = format!("answering with {side}");
        let progress = &mut io.progress;
        let gens = journalled(
            &mut journal,
            &keys,
            &requests,
            |r, done| model.chat(r, done),
            &mut |d| {
                progress(Progress {
                    done: (k * n + d) as u64,
                    total,
                    message: &message,
                })
            },
        )?;
        let texts: Vec<String> = gens
            .into_iter()
            .map(|g| g.into_iter().next().map(|g| g.text.trim().to_string()))
            .map(Option::unwrap_or_default)
            .collect();
        m.insert(
            format!("mean_response_chars_{side}"),
            (texts.iter().map(|t| t.chars().count()).sum::<usize>() as f64 / n as f64).into(),
        );
        engines.insert(side.into(), model.describe());
        answers.push(texts);
    }
    let judge = backend(io, "judge")?;
    let (mut requests, mut keys) = (Vec::new(), Vec::new());
    for (side, texts) in ["a", "b"].iter().zip(&answers) {
        for (r, t) in prompts.iter().zip(texts) {
            requests.push(JudgeRequest {
                instruction: r.prompt.clone(),
                response: t.clone(),
            });
            keys.push(format!("judge {side}: prompt {}", r.prompt_id));
        }
    }
    let progress = &mut io.progress;
    let mut of_a = verdicts(
        judge.as_ref(),
        &mut journal,
        &p.judge,
        &requests,
        &keys,
        &mut |d| {
            progress(Progress {
                done: (2 * n + d) as u64,
                total,
                message: "judging",
            })
        },
    )?;
    let of_b = of_a.split_off(n);
    let answers_b = answers.pop().expect("B answered");
    let answers_a = answers.pop().expect("A answered");
    let mut rows = Vec::with_capacity(n);
    for (r, ((ra, rb), (va, vb))) in prompts.iter().zip(
        answers_a
            .into_iter()
            .zip(answers_b)
            .zip(of_a.into_iter().zip(of_b)),
    ) {
        rows.push(Head2HeadRow {
            prompt_id: r.prompt_id.clone(),
            prompt: r.prompt.clone(),
            response_a: ra,
            response_b: rb,
            score_a: va.0,
            score_b: vb.0,
            outcome: Outcome::of(va.0, vb.0),
            judgements_a: va.2,
            judgements_b: vb.2,
        });
    }
    super::jsonl::write(output(io, "verdicts")?, &rows)?;
    let mut out = super::model_io::metrics_of(&tally(&rows));
    out.extend(m);
    if let serde_json::Value::Object(u) = judge.usage() {
        out.extend(u.into_iter().map(|(k, v)| (format!("judge_{k}"), v)));
    }
    out.insert("journal_reused".into(), journal.reused.into());
    out.insert("requests_sent".into(), journal.sent.into());
    engines.insert("judge".into(), judge.describe());
    io.engine = serde_json::Value::Object(engines);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(a: Option<f64>, b: Option<f64>) -> Head2HeadRow {
        Head2HeadRow {
            prompt_id: "p".into(),
            prompt: "q".into(),
            response_a: String::new(),
            response_b: String::new(),
            score_a: a,
            score_b: b,
            outcome: Outcome::of(a, b),
            judgements_a: vec![],
            judgements_b: vec![],
        }
    }

    #[test]
    fn outcomes_from_scores() {
        assert_eq!(Outcome::of(Some(4.0), Some(3.5)), Outcome::Win);
        assert_eq!(Outcome::of(Some(2.0), Some(3.0)), Outcome::Loss);
        assert_eq!(Outcome::of(Some(3.0), Some(3.0)), Outcome::Tie);
        assert_eq!(Outcome::of(None, Some(3.0)), Outcome::Unjudged);
        assert_eq!(Outcome::of(Some(3.0), None), Outcome::Unjudged);
    }

    #[test]
    fn tally_counts_shares_and_intervals() {
        let rows = vec![
            row(Some(5.0), Some(1.0)),
            row(Some(4.0), Some(2.0)),
            row(Some(3.0), Some(3.0)),
            row(Some(1.0), Some(2.0)),
            row(None, Some(2.0)),
        ];
        let t = tally(&rows);
        assert_eq!((t.prompts, t.judged, t.unjudged), (5, 4, 1));
        assert_eq!((t.wins, t.ties, t.losses), (2, 1, 1));
        assert_eq!((t.win, t.tie, t.loss), (Some(0.5), Some(0.25), Some(0.25)));
        let w = wilson(2, 4).unwrap();
        assert_eq!((t.win_lo, t.win_hi), (Some(w.lo), Some(w.hi)));
        // means over the parsed scores: a 13/4, b 10/5
        assert_eq!((t.mean_score_a, t.mean_score_b), (Some(3.25), Some(2.0)));
        let none = tally(&[row(None, None)]);
        assert_eq!((none.judged, none.win, none.win_lo), (0, None, None));
    }
}
