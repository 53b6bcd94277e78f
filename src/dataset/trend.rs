//! The trend of one dataset across three or more iterations (AIFT(M1), AIFT(M2), …): rows,
//! overlap with the previous iteration, mean chosen/rejected length, score means, tie share.
use serde::Serialize;

use super::record::{RowRecord, SideSpec};
use super::stats::SideStats;

/// One revision of the dataset, as records.
pub struct TrendInput {
    pub rev: String,
    pub spec: SideSpec,
    pub records: Vec<RowRecord>,
}

/// One line of the trend table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendRow {
    pub rev: String,
    pub rows: u64,
    /// Rows whose key also occurs in the previous revision (`None` for the first).
    pub overlap_prev: Option<u64>,
    pub overlap_prev_share: Option<f64>,
    pub chosen_len_mean: Option<f64>,
    pub rejected_len_mean: Option<f64>,
    pub chosen_score_mean: Option<f64>,
    pub rejected_score_mean: Option<f64>,
    pub tie_share: Option<f64>,
}

/// The trend rows of `inputs`, in order. All inputs must share one key (the caller plans it).
pub fn trend(inputs: &[TrendInput]) -> Vec<TrendRow> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut prev: Option<std::collections::HashSet<u128, foldhash::fast::FixedState>> = None;
    for input in inputs {
        let stats = SideStats::compute(&input.spec, &input.records);
        let overlap = prev
            .as_ref()
            .map(|p| input.records.iter().filter(|r| p.contains(&r.key)).count() as u64);
        let score = |i: usize| stats.scores.get(i).and_then(|s| s.mean);
        out.push(TrendRow {
            rev: input.rev.clone(),
            rows: stats.rows,
            overlap_prev: overlap,
            overlap_prev_share: overlap
                .filter(|_| stats.rows > 0)
                .map(|n| n as f64 / stats.rows as f64),
            chosen_len_mean: stats.mean_len("chosen"),
            rejected_len_mean: stats.mean_len("rejected"),
            chosen_score_mean: score(0),
            rejected_score_mean: score(1),
            tie_share: stats.tie_share,
        });
        prev = Some(input.records.iter().map(|r| r.key).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: u128, chosen: u32) -> RowRecord {
        RowRecord {
            id: [key as u8; 32],
            key,
            content: key,
            line: 1,
            lens: [1, chosen, 10],
            scores: [0.0; 2],
            flags: 0,
            schema: 0,
            fields: 0,
        }
    }

    #[test]
    fn overlap_and_lengths_per_revision() {
        let spec = SideSpec {
            kind: "aift".into(),
            key: vec!["prompt".into()],
            length_fields: vec!["prompt".into(), "chosen".into(), "rejected".into()],
            score_fields: vec![],
            pairs: true,
        };
        let mk = |rev: &str, recs: Vec<RowRecord>| TrendInput {
            rev: rev.into(),
            spec: spec.clone(),
            records: recs,
        };
        let rows = trend(&[
            mk("M1", vec![rec(1, 100), rec(2, 200)]),
            mk("M2", vec![rec(2, 300), rec(3, 500), rec(4, 400)]),
            mk("M3", vec![rec(5, 1000)]),
        ]);
        assert_eq!(rows[0].overlap_prev, None);
        assert_eq!(rows[1].overlap_prev, Some(1));
        assert_eq!(rows[1].overlap_prev_share, Some(1.0 / 3.0));
        assert_eq!(rows[1].chosen_len_mean, Some(400.0));
        assert_eq!(rows[2].overlap_prev, Some(0));
        assert_eq!(rows[2].rows, 1);
        assert_eq!(rows[0].chosen_score_mean, None);
    }
}
