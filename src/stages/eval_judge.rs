//! The `eval-judge` stage's measures: how a judge's scores of the EFT evaluation split agree
//! with the human ranking, as the paper reports them (Yuan et al. 2024, Table 4): pairwise
//! accuracy, 5-best %, exact match %, Spearman's ρ and Kendall's τ, each with the count it is
//! computed on and a 95% interval.
//!
//! Definitions. Responses are grouped by `prompt_id`; `human` is the human quality (higher is
//! better), `judge` the judge's score, `None` when it did not parse.
//! - A **human pair** is two responses to one prompt whose human qualities differ (responses
//!   the humans tie are never a pair: the humans gave no order). A **ranked prompt** has at
//!   least one human pair.
//! - **Pairwise accuracy** = agreeing pairs / human pairs. The judge agrees on a pair when both
//!   scores parsed and order the two responses as the humans do. A judge tie on a human pair
//!   and a pair with an unparsed score count as disagreement (and are counted apart:
//!   `judge_ties`, `unparsed_pairs`). Wilson interval over pairs.
//! - **Exact match** = ranked prompts on which the judge agrees on every human pair / ranked
//!   prompts: its scores sort the responses in the human order, responses the humans tie in
//!   either order; a judge tie between responses the humans order, or an unparsed score,
//!   breaks the match. Wilson interval over ranked prompts.
//! - **5-best** = responses the judge scored 5 that the humans rank highest in their prompt /
//!   responses the judge scored 5, over ranked prompts. "Scored 5" is a score of at least
//!   [`FIVE`] (4.5: a perfect 5, or a mean of samples or a digit judge's expected score that
//!   rounds to 5); "highest" is the maximum human quality of the prompt, ties for the top all
//!   counting as highest. Wilson interval over those responses; undefined when the judge gave
//!   no 5.
//! - **Spearman's ρ / Kendall's τ-b** are computed per ranked prompt, between human quality and
//!   judge score over the prompt's responses whose score parsed (ties: mid-ranks for ρ, the τ-b
//!   correction for τ), then averaged over prompts: the human qualities rank responses within a
//!   prompt and are not comparable across prompts. A prompt with fewer than two parsed
//!   responses, or whose parsed responses the humans all tie, is left out; a judge that scores
//!   all of a prompt's parsed responses equal gives that prompt ρ = τ = 0 (no order, as likely
//!   right as wrong; counted in `judge_constant_prompts`). 95% interval: percentile bootstrap
//!   of the mean over prompts ([`stats::bootstrap_mean`], [`stats::BOOTSTRAP_RESAMPLES`]
//!   resamples, fixed seed).
//!
//! Pairs within one prompt are not independent, so the Wilson interval on pairwise accuracy is
//! somewhat narrower than a prompt-level bootstrap would give; it is the usual reporting.
use std::collections::BTreeMap;

use serde::Serialize;

use super::stats::{self, Interval};

/// A judge score at or above this counts as "scored 5" for 5-best.
pub const FIVE: f64 = 4.5;

/// One judged evaluation response.
#[derive(Debug, Clone)]
pub struct Scored {
    pub prompt_id: String,
    pub human: f64,
    pub judge: Option<f64>,
}

/// Every measure with its count and 95% interval (flat, as the run record's metrics; `None`
/// where the count is 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RewardMetrics {
    /// Human pairs.
    pub pairs: usize,
    pub agree: usize,
    /// Human pairs the judge scored equal.
    pub judge_ties: usize,
    /// Human pairs with at least one unparsed judge score.
    pub unparsed_pairs: usize,
    /// Responses whose judge score was unparsed.
    pub unparsed_responses: usize,
    /// Pairwise accuracy, agree / pairs.
    pub accuracy: Option<f64>,
    pub accuracy_lo: Option<f64>,
    pub accuracy_hi: Option<f64>,
    /// Ranked prompts, and those the judge orders exactly as the humans do.
    pub ranked_prompts: usize,
    pub exact_match_prompts: usize,
    pub exact_match: Option<f64>,
    pub exact_match_lo: Option<f64>,
    pub exact_match_hi: Option<f64>,
    /// Responses of ranked prompts the judge scored 5, and those the humans rank highest.
    pub five_responses: usize,
    pub five_best_responses: usize,
    pub five_best: Option<f64>,
    pub five_best_lo: Option<f64>,
    pub five_best_hi: Option<f64>,
    /// Prompts the correlations average over, and those where the judge scored all equal.
    pub correlation_prompts: usize,
    pub judge_constant_prompts: usize,
    pub spearman: Option<f64>,
    pub spearman_lo: Option<f64>,
    pub spearman_hi: Option<f64>,
    pub kendall_tau: Option<f64>,
    pub kendall_tau_lo: Option<f64>,
    pub kendall_tau_hi: Option<f64>,
    pub bootstrap_resamples: usize,
}

fn split(i: Option<Interval>) -> (Option<f64>, Option<f64>) {
    (i.map(|i| i.lo), i.map(|i| i.hi))
}

fn ratio(k: usize, n: usize) -> Option<f64> {
    (n > 0).then(|| k as f64 / n as f64)
}

/// Every measure over `rows` (see the module's definitions).
pub fn reward_metrics(rows: &[Scored]) -> RewardMetrics {
    let mut by_prompt: BTreeMap<&str, Vec<&Scored>> = BTreeMap::new();
    for r in rows {
        by_prompt.entry(r.prompt_id.as_str()).or_default().push(r);
    }
    let mut m = RewardMetrics {
        unparsed_responses: rows.iter().filter(|r| r.judge.is_none()).count(),
        bootstrap_resamples: stats::BOOTSTRAP_RESAMPLES,
        ..Default::default()
    };
    let (mut rhos, mut taus) = (Vec::new(), Vec::new());
    for group in by_prompt.values() {
        let (mut pairs, mut agree) = (0, 0);
        for (i, x) in group.iter().enumerate() {
            for y in &group[i + 1..] {
                if x.human == y.human {
                    continue;
                }
                pairs += 1;
                match (x.judge, y.judge) {
                    (Some(sx), Some(sy)) if sx == sy => m.judge_ties += 1,
                    (Some(sx), Some(sy)) => {
                        if (sx > sy) == (x.human > y.human) {
                            agree += 1;
                        }
                    }
                    _ => m.unparsed_pairs += 1,
                }
            }
        }
        m.pairs += pairs;
        m.agree += agree;
        if pairs == 0 {
            continue;
        }
        m.ranked_prompts += 1;
        if agree == pairs {
            m.exact_match_prompts += 1;
        }
        let top = group.iter().map(|r| r.human).fold(f64::MIN, f64::max);
        for r in group.iter().filter(|r| r.judge.is_some_and(|s| s >= FIVE)) {
            m.five_responses += 1;
            if r.human == top {
                m.five_best_responses += 1;
            }
        }
        let parsed: Vec<(f64, f64)> = group
            .iter()
            .filter_map(|r| r.judge.map(|s| (r.human, s)))
            .collect();
        let (h, s): (Vec<f64>, Vec<f64>) = parsed.into_iter().unzip();
        if h.len() < 2 || h.iter().all(|v| *v == h[0]) {
            continue;
        }
        if s.iter().all(|v| *v == s[0]) {
            m.judge_constant_prompts += 1;
        }
        rhos.push(stats::spearman(&h, &s).unwrap_or(0.0));
        taus.push(stats::kendall_tau_b(&h, &s).unwrap_or(0.0));
    }
    m.accuracy = ratio(m.agree, m.pairs);
    (m.accuracy_lo, m.accuracy_hi) = split(stats::wilson(m.agree, m.pairs));
    m.exact_match = ratio(m.exact_match_prompts, m.ranked_prompts);
    (m.exact_match_lo, m.exact_match_hi) =
        split(stats::wilson(m.exact_match_prompts, m.ranked_prompts));
    m.five_best = ratio(m.five_best_responses, m.five_responses);
    (m.five_best_lo, m.five_best_hi) =
        split(stats::wilson(m.five_best_responses, m.five_responses));
    m.correlation_prompts = rhos.len();
    let boot = |v: &[f64]| {
        split(stats::bootstrap_mean(
            v,
            stats::BOOTSTRAP_RESAMPLES,
            stats::BOOTSTRAP_SEED,
        ))
    };
    m.spearman = stats::mean(&rhos);
    (m.spearman_lo, m.spearman_hi) = boot(&rhos);
    m.kendall_tau = stats::mean(&taus);
    (m.kendall_tau_lo, m.kendall_tau_hi) = boot(&taus);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(p: &str, human: f64, judge: Option<f64>) -> Scored {
        Scored {
            prompt_id: p.into(),
            human,
            judge,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
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
            s("c", 0.5, Some(4.0)), // humans tie: not a pair, c is not a ranked prompt
        ];
        let m = reward_metrics(&rows);
        assert_eq!(
            (m.pairs, m.agree, m.judge_ties, m.unparsed_pairs),
            (4, 2, 1, 1)
        );
        assert_eq!(m.unparsed_responses, 1);
        assert_eq!(m.accuracy, Some(0.5));
        // a's judge tie and b's unparsed score both break the exact match
        assert_eq!((m.ranked_prompts, m.exact_match_prompts), (2, 0));
        assert_eq!(m.exact_match, Some(0.0));
        assert!(m.exact_match_lo == Some(0.0) && m.exact_match_hi.unwrap() > 0.5);
        // two 5s in a (0.9 is a's best, 0.5 is not); c's responses are not counted
        assert_eq!((m.five_responses, m.five_best_responses), (2, 1));
        // a: humans 0.9, 0.1, 0.5 vs judge 5, 2, 5: ranks (3,1,2) vs (2.5,1,2.5) →
        // ρ = 0.866; τ-b: pairs (0.9,0.1) c, (0.9,0.5) judge tie, (0.1,0.5) c → 2/√(3·2);
        // b has one parsed response, c no human order: only a counts
        assert_eq!(m.correlation_prompts, 1);
        assert!(close(m.spearman, 3f64.sqrt() / 2.0), "{:?}", m.spearman);
        assert!(
            close(m.kendall_tau, 2.0 / 6f64.sqrt()),
            "{:?}",
            m.kendall_tau
        );
        // one prompt: every bootstrap resample is that prompt
        assert!(close(m.spearman_lo, 3f64.sqrt() / 2.0) && close(m.spearman_hi, 3f64.sqrt() / 2.0));

        let flipped: Vec<Scored> = rows
            .iter()
            .map(|r| s(&r.prompt_id, -r.human, r.judge))
            .collect();
        let f = reward_metrics(&flipped);
        assert_eq!(f.agree, 0);
        assert!(close(f.spearman, -(3f64.sqrt()) / 2.0));
    }

    #[test]
    fn a_constant_judge_correlates_zero_and_never_matches() {
        let rows = vec![
            s("a", 0.9, Some(3.0)),
            s("a", 0.1, Some(3.0)),
            s("b", 0.2, Some(3.0)),
            s("b", 0.8, Some(3.0)),
            s("b", 0.4, Some(3.0)),
        ];
        let m = reward_metrics(&rows);
        assert_eq!((m.pairs, m.agree, m.judge_ties), (4, 0, 4));
        assert_eq!((m.correlation_prompts, m.judge_constant_prompts), (2, 2));
        assert_eq!((m.spearman, m.kendall_tau), (Some(0.0), Some(0.0)));
        assert_eq!((m.exact_match_prompts, m.five_responses), (0, 0));
        assert_eq!((m.five_best, m.five_best_lo), (None, None));
    }

    #[test]
    fn a_tie_for_the_human_top_counts_as_best() {
        let rows = vec![
            s("a", 0.8, Some(5.0)),
            s("a", 0.8, Some(4.6)), // rounds to 5; humans tie it with the top
            s("a", 0.2, Some(4.4)), // not a 5
        ];
        let m = reward_metrics(&rows);
        assert_eq!((m.five_responses, m.five_best_responses), (2, 2));
        // the human tie (0.8, 0.8) is not a pair, so the judge's order there does not matter
        assert_eq!((m.pairs, m.agree, m.exact_match_prompts), (2, 2, 1));
    }

    #[test]
    fn nothing_to_measure_gives_no_figure() {
        let m = reward_metrics(&[s("a", 0.5, Some(1.0))]);
        assert_eq!(
            (m.pairs, m.ranked_prompts, m.correlation_prompts),
            (0, 0, 0)
        );
        assert_eq!((m.accuracy, m.accuracy_lo, m.spearman), (None, None, None));
    }

    fn groups() -> impl Strategy<Value = Vec<Vec<(u8, u8)>>> {
        // prompts of 2-6 responses, human quality in tenths, a judge score 0-5
        prop::collection::vec(prop::collection::vec((0u8..=10, 0u8..=5), 2..7), 1..12)
    }

    fn rows_of(g: &[Vec<(u8, u8)>], judge: impl Fn(f64, u8) -> Option<f64>) -> Vec<Scored> {
        g.iter()
            .enumerate()
            .flat_map(|(p, rs)| {
                let judge = &judge;
                rs.iter().map(move |&(h, j)| {
                    let human = h as f64 / 10.0;
                    s(&format!("p{p}"), human, judge(human, j))
                })
            })
            .collect()
    }

    proptest! {
        #[test]
        fn a_judge_ordering_as_humans_do_scores_perfectly(g in groups()) {
            // any strictly increasing function of the human quality
            let m = reward_metrics(&rows_of(&g, |h, _| Some(1.0 + 3.0 * h * h)));
            if m.pairs > 0 {
                prop_assert_eq!(m.accuracy, Some(1.0));
                prop_assert_eq!(m.exact_match, Some(1.0));
                prop_assert!(close(m.spearman, 1.0) && close(m.kendall_tau, 1.0));
                prop_assert!(m.accuracy_lo.unwrap() > 0.0 && m.accuracy_hi == Some(1.0));
            } else {
                prop_assert_eq!(m.accuracy, None);
            }
            let r = reward_metrics(&rows_of(&g, |h, _| Some(5.0 - 5.0 * h)));
            if r.pairs > 0 {
                prop_assert_eq!(r.accuracy, Some(0.0));
                prop_assert!(close(r.spearman, -1.0) && close(r.kendall_tau, -1.0));
            }
        }

        #[test]
        fn measures_stay_in_range_and_count_consistently(g in groups(), drop in 0u8..6) {
            // the judge's own score, unparsed where it equals `drop`
            let m = reward_metrics(&rows_of(&g, |_, j| (j != drop).then_some(j as f64)));
            prop_assert!(m.judge_ties + m.unparsed_pairs + m.agree <= m.pairs);
            prop_assert!(m.exact_match_prompts <= m.ranked_prompts);
            prop_assert!(m.five_best_responses <= m.five_responses);
            prop_assert!(m.correlation_prompts <= m.ranked_prompts);
            for (v, lo, hi) in [
                (m.accuracy, m.accuracy_lo, m.accuracy_hi),
                (m.exact_match, m.exact_match_lo, m.exact_match_hi),
                (m.five_best, m.five_best_lo, m.five_best_hi),
                (m.spearman, m.spearman_lo, m.spearman_hi),
                (m.kendall_tau, m.kendall_tau_lo, m.kendall_tau_hi),
            ] {
                if let (Some(v), Some(lo), Some(hi)) = (v, lo, hi) {
                    prop_assert!(lo <= v + 1e-9 && v <= hi + 1e-9, "{} {} {}", lo, v, hi);
                    prop_assert!((-1.0..=1.0).contains(&v));
                } else {
                    prop_assert!(v.is_none() && lo.is_none() && hi.is_none());
                }
            }
            // the row order does not matter
            let mut rows = rows_of(&g, |_, j| (j != drop).then_some(j as f64));
            rows.reverse();
            prop_assert_eq!(reward_metrics(&rows).pairs, m.pairs);
            prop_assert_eq!(reward_metrics(&rows).agree, m.agree);
        }
    }
}
