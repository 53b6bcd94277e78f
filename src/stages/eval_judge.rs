//! The `eval-judge` stage's measure: pairwise agreement of a judge's scores with the human
//! ranking (the paper's reward-model metric). For every two responses to the same prompt that
//! the humans rank differently, the judge agrees when its scores order them the same way; a
//! judge tie or an unparsed score counts as disagreement (and is reported).
use std::collections::BTreeMap;

use serde::Serialize;

/// One judged evaluation response.
#[derive(Debug, Clone)]
pub struct Scored {
    pub prompt_id: String,
    pub human: f64,
    pub judge: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JudgeAccuracy {
    /// Response pairs the humans rank differently.
    pub pairs: usize,
    pub agree: usize,
    /// Pairs the judge scored equal.
    pub judge_ties: usize,
    /// Pairs with at least one unparsed judge score.
    pub unparsed_pairs: usize,
    /// Responses whose judge score was unparsed.
    pub unparsed_responses: usize,
    /// agree / pairs (None without pairs).
    pub accuracy: Option<f64>,
}

pub fn pairwise_accuracy(rows: &[Scored]) -> JudgeAccuracy {
    let mut by_prompt: BTreeMap<&str, Vec<&Scored>> = BTreeMap::new();
    for r in rows {
        by_prompt.entry(r.prompt_id.as_str()).or_default().push(r);
    }
    let mut a = JudgeAccuracy {
        unparsed_responses: rows.iter().filter(|r| r.judge.is_none()).count(),
        ..Default::default()
    };
    for group in by_prompt.values() {
        for (i, x) in group.iter().enumerate() {
            for y in &group[i + 1..] {
                if x.human == y.human {
                    continue;
                }
                a.pairs += 1;
                match (x.judge, y.judge) {
                    (Some(sx), Some(sy)) if sx == sy => a.judge_ties += 1,
                    (Some(sx), Some(sy)) => {
                        if (sx > sy) == (x.human > y.human) {
                            a.agree += 1;
                        }
                    }
                    _ => a.unparsed_pairs += 1,
                }
            }
        }
    }
    a.accuracy = (a.pairs > 0).then(|| a.agree as f64 / a.pairs as f64);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: &str, human: f64, judge: Option<f64>) -> Scored {
        Scored {
            prompt_id: p.into(),
            human,
            judge,
        }
    }

    #[test]
    fn counts_agreement_ties_and_unparsed() {
        let rows = vec![
            s("a", 0.9, Some(5.0)),
            s("a", 0.1, Some(2.0)), // agrees with the first
            s("a", 0.5, Some(5.0)), // ties with the first, agrees with the second
            s("b", 1.0, None),
            s("b", 0.0, Some(3.0)),
            s("c", 0.5, Some(1.0)),
            s("c", 0.5, Some(4.0)), // humans tie: not a pair
        ];
        let a = pairwise_accuracy(&rows);
        assert_eq!(a.pairs, 4);
        assert_eq!(a.agree, 2);
        assert_eq!(a.judge_ties, 1);
        assert_eq!(a.unparsed_pairs, 1);
        assert_eq!(a.unparsed_responses, 1);
        assert_eq!(a.accuracy, Some(0.5));
        let flipped: Vec<Scored> = rows
            .iter()
            .map(|r| s(&r.prompt_id, -r.human, r.judge))
            .collect();
        assert_eq!(pairwise_accuracy(&flipped).agree, 0);
    }
}
