//! The tables `eval-judge` and `head2head` print: each measure with its value, 95% interval and
//! what it is computed on, drawn from the run record's metrics (so a reused run prints the
//! same table as the run that made it).
use comfy_table::{presets, Cell, CellAlignment, Table};
use serde_json::Value;

use crate::stages::eval_judge::RewardMetrics;
use crate::stages::head2head::Head2HeadMetrics;
use crate::stages::model_io::metrics_of;
use crate::stages::record::Metrics;

fn f(m: &Metrics, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

fn u(m: &Metrics, k: &str) -> u64 {
    m.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1}%", 100.0 * v))
}

fn pct_interval(lo: Option<f64>, hi: Option<f64>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{:.1} – {:.1}%", 100.0 * lo, 100.0 * hi),
        _ => "–".into(),
    }
}

fn corr(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.3}"))
}

fn corr_interval(lo: Option<f64>, hi: Option<f64>) -> String {
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{lo:.3} – {hi:.3}"),
        _ => "–".into(),
    }
}

fn plural(n: u64, one: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        _ => format!("{n} {one}s"),
    }
}

fn table(header: &[&str], rows: Vec<[String; 4]>) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED);
    t.set_header(header.iter().map(Cell::new));
    for r in rows {
        t.add_row(
            r.into_iter()
                .enumerate()
                .map(|(i, c)| match i {
                    0 => Cell::new(c),
                    _ => Cell::new(c).set_alignment(CellAlignment::Right),
                })
                .collect::<Vec<_>>(),
        );
    }
    t
}

fn keys_of<T: serde::Serialize>(t: &T) -> Vec<String> {
    metrics_of(t).into_keys().collect()
}

/// `eval-judge`'s table and the metric keys it shows.
pub fn reward_table(m: &Metrics) -> (String, Vec<String>) {
    let bounds = |k: &str| (f(m, &format!("{k}_lo")), f(m, &format!("{k}_hi")));
    let prop = |name: &str, k: &str, on: String| {
        let (lo, hi) = bounds(k);
        [name.to_string(), pct(f(m, k)), pct_interval(lo, hi), on]
    };
    let cor = |name: &str, k: &str| {
        let (lo, hi) = bounds(k);
        [
            name.to_string(),
            corr(f(m, k)),
            corr_interval(lo, hi),
            format!("{} prompts", u(m, "correlation_prompts")),
        ]
    };
    let rows = vec![
        prop(
            "pairwise accuracy",
            "accuracy",
            format!("{} pairs", u(m, "pairs")),
        ),
        prop(
            "5-best",
            "five_best",
            format!("{} responses scored 5", u(m, "five_responses")),
        ),
        prop(
            "exact match",
            "exact_match",
            format!("{} prompts", u(m, "ranked_prompts")),
        ),
        cor("Spearman ρ", "spearman"),
        cor("Kendall τ-b", "kendall_tau"),
    ];
    let t = table(&["measure", "value", "95% interval", "computed on"], rows);
    let text = format!(
        "{t}\n\
         judge ties: {} of {}; unparsed scores: {} (in {}); all scores equal on {} (ρ = τ = 0 \
         there)\n\
         intervals: Wilson (proportions); percentile bootstrap over prompts, {} resamples \
         (correlations)\n",
        u(m, "judge_ties"),
        plural(u(m, "pairs"), "pair"),
        plural(u(m, "unparsed_responses"), "response"),
        plural(u(m, "unparsed_pairs"), "pair"),
        plural(u(m, "judge_constant_prompts"), "prompt"),
        u(m, "bootstrap_resamples"),
    );
    (text, keys_of(&RewardMetrics::default()))
}

/// `head2head`'s table and the metric keys it shows.
pub fn head2head_table(m: &Metrics) -> (String, Vec<String>) {
    let row = |name: &str, count: &str, k: &str| {
        [
            name.to_string(),
            u(m, count).to_string(),
            pct(f(m, k)),
            pct_interval(f(m, &format!("{k}_lo")), f(m, &format!("{k}_hi"))),
        ]
    };
    let rows = vec![
        row("A wins", "wins", "win"),
        row("tie", "ties", "tie"),
        row("A loses", "losses", "loss"),
    ];
    let t = table(&["A against B", "prompts", "share", "95% interval"], rows);
    let text = format!(
        "{t}\n\
         {}, {} judged ({} unjudged: a score did not parse); mean score A {}, B {}\n\
         intervals: Wilson, over the judged prompts\n",
        plural(u(m, "prompts"), "prompt"),
        u(m, "judged"),
        u(m, "unjudged"),
        corr(f(m, "mean_score_a")),
        corr(f(m, "mean_score_b")),
    );
    (text, keys_of(&Head2HeadMetrics::default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::eval_judge::{reward_metrics, Scored};

    #[test]
    fn reward_table_of_a_small_evaluation() {
        let rows: Vec<Scored> = [
            ("a", 0.9, Some(5.0)),
            ("a", 0.1, Some(2.0)),
            ("a", 0.5, Some(5.0)),
            ("b", 1.0, None),
            ("b", 0.0, Some(3.0)),
            ("c", 0.2, Some(1.0)),
            ("c", 0.7, Some(4.0)),
            ("c", 0.4, Some(4.0)),
        ]
        .into_iter()
        .map(|(p, human, judge)| Scored {
            prompt_id: p.into(),
            human,
            judge,
        })
        .collect();
        let m = metrics_of(&reward_metrics(&rows));
        let (text, keys) = reward_table(&m);
        insta::assert_snapshot!("reward_table", text);
        assert!(keys.iter().any(|k| k == "kendall_tau_hi") && keys.contains(&"pairs".into()));
    }

    #[test]
    fn head2head_table_with_an_unjudged_prompt() {
        let m: Metrics = serde_json::from_value(serde_json::json!({
            "prompts": 5, "judged": 4, "unjudged": 1, "wins": 2, "ties": 1, "losses": 1,
            "win": 0.5, "win_lo": 0.15, "win_hi": 0.85, "tie": 0.25, "tie_lo": 0.046,
            "tie_hi": 0.699, "loss": 0.25, "loss_lo": 0.046, "loss_hi": 0.699,
            "mean_score_a": 3.25, "mean_score_b": 2.0
        }))
        .unwrap();
        let (text, _) = head2head_table(&m);
        insta::assert_snapshot!("head2head_table", text);
    }
}
