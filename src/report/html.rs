//! The report as one HTML page: the template (`report.html`, minijinja, HTML-escaped) with the
//! figures formatted here and the charts inlined as SVG.
use serde::Serialize;

use super::plots::{self, Bars, Line, GREEN, RED};
use super::{Report, ReportError};
use crate::runs::key_figures;

const TEMPLATE: &str = include_str!("report.html");

fn count(v: Option<u64>) -> String {
    v.map_or_else(|| "–".into(), |n| n.to_string())
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.3}"))
}

#[derive(Serialize)]
struct IterationRow {
    t: usize,
    model: String,
    aift: String,
    prompts: String,
    candidates: String,
    unparsed: String,
    pairs: String,
    ties: String,
    too_few: String,
    chosen: String,
    rejected: String,
}

#[derive(Serialize)]
struct LengthRow {
    aift: String,
    candidates: String,
    chosen: String,
    rejected: String,
}

#[derive(Serialize)]
struct DpoRow {
    model: String,
    steps: String,
    pairs: String,
    final_loss: String,
    reward_margin: String,
    reward_accuracy: String,
}

#[derive(Serialize)]
struct JudgeRow {
    model: String,
    pairs: String,
    agree: String,
    accuracy: String,
}

#[derive(Serialize)]
struct RunView {
    run: String,
    stage: String,
    tags: String,
    started: String,
    inputs: String,
    figures: String,
    seconds: String,
    status: String,
}

#[derive(Serialize)]
struct Figure {
    title: String,
    svg: String,
}

fn length(l: &Option<super::data::Length>) -> String {
    l.as_ref().map_or_else(
        || "–".into(),
        |l| format!("{:.0} / {:.0}", l.mean, l.median),
    )
}

/// The page.
pub fn render(r: &Report) -> Result<String, ReportError> {
    let its = &r.iterations;
    let cats: Vec<String> = its.iter().map(|i| i.aift.clone()).collect();
    let counts = |name: &str, colour, f: &dyn Fn(&super::Iteration) -> Option<u64>| Bars {
        name: name.into(),
        colour,
        values: its.iter().map(|i| f(i).map(|n| n as f64)).collect(),
    };
    let mut figures = Vec::new();
    if !its.is_empty() {
        figures.push(Figure {
            title: "Prompts, pairs, ties and unparsed scores per iteration".into(),
            svg: plots::grouped_bars(
                "per iteration",
                &cats,
                &[
                    counts("prompts kept", plots::colour(0), &|i| i.prompts_kept),
                    counts("pairs", GREEN, &|i| i.pairs),
                    counts("ties", plots::colour(1), &|i| i.ties),
                    counts("unparsed scores", RED, &|i| i.unparsed_scores),
                ],
                "count",
            )?,
        });
    }
    let mut histograms = Vec::new();
    for i in its {
        let bins: std::collections::BTreeSet<i64> = i
            .hist_chosen
            .keys()
            .chain(i.hist_rejected.keys())
            .copied()
            .collect();
        let (lo, hi) = match (bins.first(), bins.last()) {
            (Some(&lo), Some(&hi)) => (lo.min(0), hi.max(5)),
            _ => (0, 5),
        };
        let scores: Vec<String> = (lo..=hi).map(|b| b.to_string()).collect();
        let side = |h: &std::collections::BTreeMap<i64, u64>| {
            (lo..=hi)
                .map(|b| Some(h.get(&b).copied().unwrap_or(0) as f64))
                .collect()
        };
        histograms.push(Figure {
            title: i.aift.clone(),
            svg: plots::grouped_bars(
                &format!("{}: judge score (rounded)", i.aift),
                &scores,
                &[
                    Bars {
                        name: "chosen".into(),
                        colour: GREEN,
                        values: side(&i.hist_chosen),
                    },
                    Bars {
                        name: "rejected".into(),
                        colour: RED,
                        values: side(&i.hist_rejected),
                    },
                ],
                "pairs",
            )?,
        });
    }
    let mean = |f: &dyn Fn(&super::Iteration) -> Option<f64>| its.iter().map(f).collect();
    let lengths_svg = match its.is_empty() {
        true => None,
        false => Some(plots::grouped_bars(
            "mean response length",
            &cats,
            &[
                Bars {
                    name: "candidates".into(),
                    colour: plots::colour(0),
                    values: mean(&|i| i.len_candidates.as_ref().map(|l| l.mean)),
                },
                Bars {
                    name: "chosen".into(),
                    colour: GREEN,
                    values: mean(&|i| i.len_chosen.as_ref().map(|l| l.mean)),
                },
                Bars {
                    name: "rejected".into(),
                    colour: RED,
                    values: mean(&|i| i.len_rejected.as_ref().map(|l| l.mean)),
                },
            ],
            "characters",
        )?),
    };
    let trained: Vec<(&super::Iteration, &super::Training)> = its
        .iter()
        .filter_map(|i| Some((i, i.dpo.as_ref()?)))
        .collect();
    let mut dpo_figures = Vec::new();
    type Pick = fn(&crate::stages::train::StepFigures) -> Option<f64>;
    let per_step: [(&str, &str, Pick); 3] = [
        ("DPO loss", "loss", |s| Some(s.loss)),
        ("reward margin", "margin", |s| s.reward_margin),
        ("reward accuracy", "accuracy", |s| s.reward_accuracy),
    ];
    if trained.iter().any(|(_, d)| !d.step_log.is_empty()) {
        for (title, y, pick) in per_step {
            let series: Vec<Line> = trained
                .iter()
                .enumerate()
                .map(|(k, (i, d))| Line {
                    name: format!("M{} → M{}", i.t, i.t + 1),
                    colour: plots::colour(k),
                    points: d
                        .step_log
                        .iter()
                        .filter_map(|s| Some((s.step as f64, pick(s)?)))
                        .collect(),
                })
                .collect();
            dpo_figures.push(Figure {
                title: title.into(),
                svg: plots::lines(&format!("{title} per step"), "step", y, &series)?,
            });
        }
    }
    let judges_svg = match r.judges.is_empty() {
        true => None,
        false => Some(plots::grouped_bars(
            "judge accuracy against human rankings",
            &r.judges.iter().map(|j| j.model.clone()).collect::<Vec<_>>(),
            &[Bars {
                name: "accuracy".into(),
                colour: plots::colour(0),
                values: r.judges.iter().map(|j| j.accuracy).collect(),
            }],
            "agreeing pairs / pairs",
        )?),
    };
    let ctx = minijinja::context! {
        revs => r.revs.join(" "),
        iterations => its.iter().map(|i| IterationRow {
            t: i.t,
            model: i.model.clone(),
            aift: i.aift.clone(),
            prompts: match (i.prompts_kept, i.prompt_attempts) {
                (Some(k), Some(a)) => format!("{k} of {a} tries"),
                (k, _) => count(k),
            },
            candidates: count(i.candidates),
            unparsed: count(i.unparsed_scores),
            pairs: count(i.pairs),
            ties: count(i.ties),
            too_few: count(i.too_few_scored),
            chosen: num(i.mean_score_chosen),
            rejected: num(i.mean_score_rejected),
        }).collect::<Vec<_>>(),
        figures,
        histograms,
        lengths => its.iter().map(|i| LengthRow {
            aift: i.aift.clone(),
            candidates: length(&i.len_candidates),
            chosen: length(&i.len_chosen),
            rejected: length(&i.len_rejected),
        }).collect::<Vec<_>>(),
        lengths_svg,
        dpo => trained.iter().map(|(i, d)| DpoRow {
            model: format!("M{} → M{}", i.t, i.t + 1),
            steps: count(d.steps),
            pairs: count(d.examples),
            final_loss: num(d.final_loss),
            reward_margin: num(d.reward_margin),
            reward_accuracy: num(d.reward_accuracy),
        }).collect::<Vec<_>>(),
        one_step => trained.iter().any(|(_, d)| d.steps == Some(1)),
        dpo_figures,
        judges => r.judges.iter().map(|j| JudgeRow {
            model: j.model.clone(),
            pairs: count(j.pairs),
            agree: count(j.agree),
            accuracy: num(j.accuracy),
        }).collect::<Vec<_>>(),
        judges_svg,
        diffs => &r.diffs,
        lineage_of => &r.lineage_of,
        lineage_svg => r.lineage.to_svg()?,
        runs => r.runs.iter().map(|x| RunView {
            run: x.run.short(),
            stage: x.stage.clone(),
            tags: x.tags.join(" "),
            started: x.started.get(..19).unwrap_or(&x.started).replacen('T', " ", 1),
            inputs: x.inputs.iter().map(|i| format!("{}={}", i.role, i.label)).collect::<Vec<_>>().join(", "),
            figures: key_figures(&x.stage, &x.metrics),
            seconds: x.seconds.map_or_else(String::new, |s| format!("{s:.1}s")),
            status: x.status.as_str().to_string(),
        }).collect::<Vec<_>>(),
    };
    let mut env = minijinja::Environment::new();
    env.add_template("report.html", TEMPLATE)?;
    Ok(env.get_template("report.html")?.render(ctx)?)
}
