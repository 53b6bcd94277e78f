//! Statistics of one side of a diff, the numbers that matter for preference data: pair count,
//! mean and median lengths, score histograms, tie share, `chosen == rejected` share, unparsed
//! score share. Computed from row records only, so cached records make them free.
use std::collections::BTreeMap;

use serde::Serialize;

use super::record::{
    FastMap, RowRecord, SideSpec, FLAG_SAME_PAIR, NO_LEN, SCORE_ABSENT, SCORE_PARSED,
    SCORE_UNPARSED,
};

/// Mean and median of one length field, in characters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthStats {
    pub field: String,
    /// Rows that have the field.
    pub rows: u64,
    pub mean: f64,
    pub median: f64,
}

/// One score field: mean and histogram (scores rounded to the nearest integer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreStats {
    pub field: String,
    /// Rows whose score parsed.
    pub parsed: u64,
    /// Rows whose score is present but not a number.
    pub unparsed: u64,
    pub mean: Option<f64>,
    /// Rounded score → rows (JSON writes the keys as strings).
    pub histogram: BTreeMap<i64, u64>,
}

/// Statistics of one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideStats {
    pub rows: u64,
    pub lengths: Vec<LengthStats>,
    pub scores: Vec<ScoreStats>,
    /// Share of rows whose two scores parsed and are equal (`None`: no rows with both scores).
    pub tie_share: Option<f64>,
    /// Share of preference pairs with `chosen == rejected` (`None`: not preference pairs).
    pub chosen_equals_rejected_share: Option<f64>,
    /// Share of rows with a score that is missing or unparseable, among datasets that have
    /// scores at all (`None`: no row has a score field).
    pub unparsed_score_share: Option<f64>,
}

fn median(v: &mut [u32]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, &mut hi, _) = v.select_nth_unstable(mid);
    if v.len() % 2 == 1 {
        hi as f64
    } else {
        let lo = *v[..mid].iter().max().expect("mid > 0");
        (lo as f64 + hi as f64) / 2.0
    }
}

fn share(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// Histogram bin of a score: the rubric's points are integers, averaged samples round to one.
fn bin(x: f32) -> i64 {
    x.round() as i64
}

impl SideStats {
    /// Statistics of `records` described by `spec`.
    pub fn compute(spec: &SideSpec, records: &[RowRecord]) -> SideStats {
        let rows = records.len() as u64;
        let mut lengths = Vec::new();
        let mut buf = Vec::with_capacity(records.len());
        for (slot, field) in spec.length_fields.iter().enumerate() {
            buf.clear();
            buf.extend(
                records
                    .iter()
                    .map(|r| r.lens[slot])
                    .filter(|&l| l != NO_LEN),
            );
            let sum: u64 = buf.iter().map(|&l| l as u64).sum();
            let n = buf.len() as u64;
            lengths.push(LengthStats {
                field: field.clone(),
                rows: n,
                mean: if n > 0 { sum as f64 / n as f64 } else { 0.0 },
                median: median(&mut buf),
            });
        }
        let mut scores = Vec::new();
        let mut any_score = false;
        for (slot, field) in spec.score_fields.iter().enumerate() {
            let mut s = ScoreStats {
                field: field.clone(),
                parsed: 0,
                unparsed: 0,
                mean: None,
                histogram: BTreeMap::new(),
            };
            let mut sum = 0f64;
            // Few distinct bins: count in a hash map, sort once.
            let mut bins: FastMap<i64, u64> = FastMap::default();
            for r in records {
                match r.score_state(slot) {
                    SCORE_PARSED => {
                        s.parsed += 1;
                        sum += r.scores[slot] as f64;
                        *bins.entry(bin(r.scores[slot])).or_default() += 1;
                    }
                    SCORE_UNPARSED => s.unparsed += 1,
                    _ => {}
                }
            }
            s.histogram = bins.into_iter().collect();
            s.mean = (s.parsed > 0).then(|| sum / s.parsed as f64);
            any_score |= s.parsed + s.unparsed > 0;
            scores.push(s);
        }
        let (mut both, mut ties) = (0u64, 0u64);
        if spec.score_fields.len() == 2 {
            for r in records {
                if let (Some(c), Some(x)) = (r.score(0), r.score(1)) {
                    both += 1;
                    ties += (c == x) as u64;
                }
            }
        }
        let unparsed = records
            .iter()
            .filter(|r| {
                (0..spec.score_fields.len())
                    .any(|i| matches!(r.score_state(i), SCORE_ABSENT | SCORE_UNPARSED))
            })
            .count() as u64;
        SideStats {
            rows,
            lengths,
            scores,
            tie_share: share(ties, both),
            chosen_equals_rejected_share: if spec.pairs {
                share(
                    records
                        .iter()
                        .filter(|r| r.flags & FLAG_SAME_PAIR != 0)
                        .count() as u64,
                    rows,
                )
            } else {
                None
            },
            unparsed_score_share: if any_score {
                share(unparsed, rows)
            } else {
                None
            },
        }
    }

    /// The mean length of `field`, if the side reports it.
    pub fn mean_len(&self, field: &str) -> Option<f64> {
        self.lengths
            .iter()
            .find(|l| l.field == field && l.rows > 0)
            .map(|l| l.mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::record::SCORE_PARSED;

    fn rec(lens: [u32; 3], scores: Option<(f32, f32)>, same: bool) -> RowRecord {
        let mut flags = if same { FLAG_SAME_PAIR } else { 0 };
        let mut s = [0.0; 2];
        if let Some((c, r)) = scores {
            flags |= SCORE_PARSED | (SCORE_PARSED << 2);
            s = [c, r];
        }
        RowRecord {
            id: [0; 32],
            key: 0,
            content: 0,
            line: 1,
            lens,
            scores: s,
            flags,
            schema: 0,
            fields: 0,
        }
    }

    fn spec() -> SideSpec {
        SideSpec {
            kind: "aift".into(),
            key: vec!["prompt".into()],
            length_fields: vec!["prompt".into(), "chosen".into(), "rejected".into()],
            score_fields: vec!["score_chosen".into(), "score_rejected".into()],
            pairs: true,
        }
    }

    #[test]
    fn means_medians_histograms_and_shares() {
        let recs = vec![
            rec([10, 100, 50], Some((5.0, 2.0)), false),
            rec([20, 200, 60], Some((4.0, 4.0)), false),
            rec([30, 400, 70], Some((4.4, 1.0)), true),
            rec([40, 300, NO_LEN], None, false),
        ];
        let s = SideStats::compute(&spec(), &recs);
        assert_eq!(s.rows, 4);
        assert_eq!(s.lengths[0].mean, 25.0);
        assert_eq!(s.lengths[0].median, 25.0);
        assert_eq!(s.lengths[1].median, 250.0);
        assert_eq!(s.lengths[2].rows, 3);
        assert_eq!(s.lengths[2].median, 60.0);
        assert_eq!(s.scores[0].histogram, BTreeMap::from([(4, 2), (5, 1)]));
        assert!((s.scores[0].mean.unwrap() - 13.4 / 3.0).abs() < 1e-6);
        assert_eq!(s.tie_share, Some(1.0 / 3.0));
        assert_eq!(s.chosen_equals_rejected_share, Some(0.25));
        assert_eq!(s.unparsed_score_share, Some(0.25));
    }

    #[test]
    fn no_scores_means_no_score_shares() {
        let s = SideStats::compute(&spec(), &[rec([1, 2, 3], None, false)]);
        assert_eq!(s.tie_share, None);
        assert_eq!(s.unparsed_score_share, None);
        assert_eq!(s.scores[0].mean, None);
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3, 1, 2]), 2.0);
    }
}
