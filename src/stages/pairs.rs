//! The `pairs` stage: per prompt, the highest-scored candidate is *chosen* and the lowest
//! *rejected*; ties and unparsed scores are dropped and counted (the AIFT(Mt) dataset). Empty
//! responses never enter a pair, nor do two identical texts: `srlm validate` (the pre-commit
//! hook) rejects such pairs, and they teach DPO nothing.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::jsonl::JsonlError;

/// One judged candidate, as the `judge` stage writes it (extra fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct Judged {
    pub prompt_id: String,
    pub prompt: String,
    pub index: u32,
    pub response: String,
    /// Mean of the parsed judge scores; `None` when no sample gave a parseable score.
    pub score: Option<f64>,
}

/// One AIFT preference pair (TRL's preference format plus the scores).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub score_chosen: f64,
    pub score_rejected: f64,
}

/// What the stage counts (recorded as the run's metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PairsMetrics {
    pub prompts: usize,
    pub pairs: usize,
    /// Prompts dropped because best and worst scored the same.
    pub ties: usize,
    /// Prompts dropped because fewer than two candidates had a parsed score.
    pub too_few_scored: usize,
    /// Candidates whose score was unparsed (null).
    pub unparsed: usize,
    /// Candidates left out because their response was empty (or only whitespace).
    pub empty: usize,
    /// Prompts dropped because the best and worst responses were the same text.
    pub identical: usize,
    pub mean_score_chosen: Option<f64>,
    pub mean_score_rejected: Option<f64>,
}

/// Builds pairs from judged candidates. Prompts keep the order of their first appearance;
/// among equal scores the lowest candidate index wins, so the result is deterministic.
pub fn build_pairs(judged: &[Judged]) -> (Vec<Pair>, PairsMetrics) {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&Judged>> = BTreeMap::new();
    for j in judged {
        groups
            .entry(j.prompt_id.as_str())
            .or_insert_with(|| {
                order.push(j.prompt_id.as_str());
                Vec::new()
            })
            .push(j);
    }
    let mut m = PairsMetrics {
        prompts: order.len(),
        ..Default::default()
    };
    let mut pairs = Vec::new();
    for id in order {
        let mut cands: Vec<(&Judged, f64)> = Vec::new();
        for j in &groups[id] {
            if j.response.trim().is_empty() {
                m.empty += 1;
                continue;
            }
            match j.score {
                Some(s) if s.is_finite() => cands.push((j, s)),
                _ => m.unparsed += 1,
            }
        }
        if cands.len() < 2 {
            m.too_few_scored += 1;
            continue;
        }
        cands.sort_by_key(|a| a.0.index);
        let best = cands
            .iter()
            .fold(None::<&(&Judged, f64)>, |acc, c| match acc {
                Some(a) if a.1 >= c.1 => Some(a),
                _ => Some(c),
            })
            .expect("two or more candidates");
        let worst = cands
            .iter()
            .fold(None::<&(&Judged, f64)>, |acc, c| match acc {
                Some(a) if a.1 <= c.1 => Some(a),
                _ => Some(c),
            })
            .expect("two or more candidates");
        if best.1 == worst.1 {
            m.ties += 1;
            continue;
        }
        if best.0.response == worst.0.response {
            m.identical += 1;
            continue;
        }
        pairs.push(Pair {
            prompt: best.0.prompt.clone(),
            chosen: best.0.response.clone(),
            rejected: worst.0.response.clone(),
            score_chosen: best.1,
            score_rejected: worst.1,
        });
    }
    m.pairs = pairs.len();
    if !pairs.is_empty() {
        let n = pairs.len() as f64;
        m.mean_score_chosen = Some(pairs.iter().map(|p| p.score_chosen).sum::<f64>() / n);
        m.mean_score_rejected = Some(pairs.iter().map(|p| p.score_rejected).sum::<f64>() / n);
    }
    (pairs, m)
}

/// Reads judged candidates from a JSONL file, naming file and line on a bad row.
pub fn read_judged(path: &Path) -> Result<Vec<Judged>, JsonlError> {
    super::jsonl::read(path)
}

/// The stage: judgements file in, pairs file out.
pub fn run(judgements: &Path, out: &Path) -> Result<PairsMetrics, JsonlError> {
    let judged = read_judged(judgements)?;
    let (pairs, metrics) = build_pairs(&judged);
    super::jsonl::write(out, &pairs)?;
    Ok(metrics)
}

/// `pairs` as a stage: input `judgements`, output `pairs`.
pub fn stage(
    io: &mut super::record::StageIo,
) -> Result<super::record::Metrics, super::record::StageFailure> {
    let m = run(
        super::model_io::input(io, "judgements")?,
        super::model_io::output(io, "pairs")?,
    )?;
    Ok(super::model_io::metrics_of(&m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(id: &str, index: u32, score: Option<f64>) -> Judged {
        Judged {
            prompt_id: id.into(),
            prompt: format!("prompt {id}"),
            index,
            response: format!("{id}-{index}"),
            score,
        }
    }

    #[test]
    fn best_and_worst_ties_and_unparsed() {
        let rows = vec![
            j("a", 0, Some(3.0)),
            j("a", 1, Some(4.5)),
            j("a", 2, None),
            j("a", 3, Some(1.0)),
            j("b", 0, Some(2.0)),
            j("b", 1, Some(2.0)),
            j("c", 0, None),
            j("c", 1, Some(5.0)),
            j("d", 0, Some(4.0)),
            j("d", 1, Some(4.0)),
            j("d", 2, Some(1.0)),
        ];
        let (pairs, m) = build_pairs(&rows);
        assert_eq!(m.prompts, 4);
        assert_eq!(m.ties, 1);
        assert_eq!(m.too_few_scored, 1);
        assert_eq!(m.unparsed, 2);
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].chosen, "a-1");
        assert_eq!(pairs[0].rejected, "a-3");
        // Equal best scores: the lower index is chosen.
        assert_eq!(pairs[1].chosen, "d-0");
        assert_eq!(pairs[1].rejected, "d-2");
        assert_eq!(m.mean_score_chosen, Some(4.25));
    }

    #[test]
    fn empty_and_identical_responses_make_no_pair() {
        let mut rows = vec![
            j("a", 0, Some(5.0)),
            j("a", 1, Some(1.0)),
            j("b", 0, Some(5.0)),
            j("b", 1, Some(1.0)),
            j("b", 2, Some(3.0)),
        ];
        rows[1].response = " \n".into(); // a's worst is empty: a has one usable candidate left
        rows[3].response = rows[2].response.clone(); // b's best and worst say the same
        let (pairs, m) = build_pairs(&rows);
        assert_eq!((m.empty, m.too_few_scored, m.identical), (1, 1, 1));
        assert!(pairs.is_empty());
    }

    #[test]
    fn bad_row_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.jsonl");
        std::fs::write(
            &p,
            "{\"prompt_id\":\"a\",\"prompt\":\"p\",\"index\":0,\"response\":\"r\",\"score\":1}\n{\"prompt_id\":\"a\"}\n",
        )
        .unwrap();
        let e = read_judged(&p).unwrap_err().to_string();
        assert!(e.contains("j.jsonl:2:"), "{e}");
        assert!(e.contains("prompt"), "{e}");
    }
}
