//! The figures of the loop the report shows, gathered from the store: per iteration t (the
//! pairs commit tagged `AIFT(Mt)` and the DPO commit tagged `M(t+1)`) the runs of its five
//! stages and the statistics of their datasets; judge accuracy per model from `eval-judge`
//! runs; the AIFT diff between consecutive iterations (the dataset diff engine).
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use srlm_store::{CommitId, EntryKind, ManifestId, RunId, Store, TreeEntry};

use super::ReportError;
use crate::dataset::committed::{diff_revisions, CommittedDataset};
use crate::dataset::engine::{plan_many, DiffOptions, Summary};
use crate::dataset::stats::SideStats;
use crate::provenance::{ObjectRef, RunRecord, RunStatus};
use crate::runs::{Labels, RunRow};
use crate::stages::iterate::layout;
use crate::stages::train::{StepFigures, STEP_LOG};

/// Mean and median length (characters) of one field.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Length {
    pub rows: u64,
    pub mean: f64,
    pub median: f64,
}

/// A DPO run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Training {
    pub run: RunId,
    pub steps: Option<u64>,
    /// Pairs seen (over every epoch).
    pub examples: Option<u64>,
    pub final_loss: Option<f64>,
    pub reward_accuracy: Option<f64>,
    pub reward_margin: Option<f64>,
    /// Per optimizer step (empty for runs recorded before srlm kept them).
    pub step_log: Vec<StepFigures>,
}

/// One iteration of the loop.
#[derive(Debug, Clone, Serialize)]
pub struct Iteration {
    pub t: usize,
    /// `M{t}`, the model that generated and (unless a fixed judge was used) judged.
    pub model: String,
    /// `AIFT(M{t})`.
    pub aift: String,
    pub commit: CommitId,
    pub prompts_kept: Option<u64>,
    pub prompt_attempts: Option<u64>,
    pub candidates: Option<u64>,
    pub unparsed_scores: Option<u64>,
    pub pairs: Option<u64>,
    pub ties: Option<u64>,
    pub too_few_scored: Option<u64>,
    pub mean_score_chosen: Option<f64>,
    pub mean_score_rejected: Option<f64>,
    /// Rounded score → pairs, for the chosen and the rejected side.
    pub hist_chosen: BTreeMap<i64, u64>,
    pub hist_rejected: BTreeMap<i64, u64>,
    pub len_candidates: Option<Length>,
    pub len_chosen: Option<Length>,
    pub len_rejected: Option<Length>,
    /// The DPO run that trained `M{t+1}` on these pairs.
    pub dpo: Option<Training>,
}

/// Judge accuracy against human rankings (an `eval-judge` run).
#[derive(Debug, Clone, Serialize)]
pub struct JudgeAccuracy {
    pub run: RunId,
    /// The judging model, by tag where it has one.
    pub model: String,
    pub pairs: Option<u64>,
    pub agree: Option<u64>,
    pub accuracy: Option<f64>,
}

/// The AIFT diff between two consecutive iterations.
#[derive(Debug, Clone, Serialize)]
pub struct AiftDiff {
    pub a: String,
    pub b: String,
    pub summary: Summary,
    pub schema_changes: usize,
}

fn u(m: &BTreeMap<String, Value>, k: &str) -> Option<u64> {
    m.get(k).and_then(Value::as_u64)
}
fn f(m: &BTreeMap<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

/// The iteration number of a tag `AIFT(M{t})`.
fn aift_number(tag: &str) -> Option<usize> {
    tag.strip_prefix("AIFT(M")?.strip_suffix(')')?.parse().ok()
}

/// The run upstream of `rec` through its input `role`: by the input's recorded source, as
/// lineage follows it (content ids only for working-tree inputs and old records).
fn upstream(
    store: &Store,
    rec: &RunRecord,
    role: &str,
) -> Result<Option<(RunId, RunRecord)>, ReportError> {
    match rec.inputs.get(role) {
        Some(o) => Ok(crate::lineage::producer(
            store,
            o,
            Some((rec.started.as_str(), rec.finished.as_str())),
        )?
        .run),
        None => Ok(None),
    }
}

/// Statistics of the dataset `obj` (none when it is not a dataset).
fn stats_of(store: &Store, obj: &ObjectRef) -> Result<Option<SideStats>, ReportError> {
    if obj.kind != EntryKind::Dataset {
        return Ok(None);
    }
    let entry = TreeEntry {
        kind: obj.kind,
        id: ManifestId(obj.id),
        size: 0,
        rows: None,
    };
    let d = CommittedDataset::open(store, obj.path.clone(), &entry)?;
    let first = d.first_row(store)?;
    let spec = plan_many(&[first], None).remove(0);
    let side = d.records(store, &spec, None)?;
    Ok(Some(SideStats::compute(&spec, &side.records)))
}

fn length(s: &SideStats, field: &str) -> Option<Length> {
    s.lengths
        .iter()
        .find(|l| l.field == field && l.rows > 0)
        .map(|l| Length {
            rows: l.rows,
            mean: l.mean,
            median: l.median,
        })
}

fn training(run: RunId, rec: &RunRecord) -> Training {
    let m = &rec.metrics;
    Training {
        run,
        steps: u(m, "steps"),
        examples: u(m, "examples"),
        final_loss: f(m, "final_loss"),
        reward_accuracy: f(m, "reward_accuracy"),
        reward_margin: f(m, "reward_margin"),
        step_log: m
            .get(STEP_LOG)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default(),
    }
}

/// The iterations whose pairs commit (`AIFT(Mt)`) is in `history`, in order of t.
pub fn iterations(
    store: &Store,
    history: &BTreeSet<CommitId>,
) -> Result<Vec<Iteration>, ReportError> {
    let tags = store.tags()?;
    let mut found: Vec<(usize, CommitId)> = tags
        .iter()
        .filter_map(|(name, c)| Some((aift_number(name)?, *c)))
        .filter(|(_, c)| history.contains(c))
        .collect();
    found.sort();
    let mut out = Vec::new();
    for (t, commit) in found {
        let Some(run) = store.read_commit(&commit)?.run else {
            continue;
        };
        let pairs = RunRecord::load(store, run)?;
        let judge = upstream(store, &pairs, "judgements")?;
        let responses = match &judge {
            Some((_, j)) => upstream(store, j, "responses")?,
            None => None,
        };
        let prompts = match &responses {
            Some((_, r)) => upstream(store, r, "prompts")?,
            None => None,
        };
        let aift_obj = pairs.outputs.get("pairs");
        let aift_stats = match aift_obj {
            Some(o) => stats_of(store, o)?,
            None => None,
        };
        let cand_stats = match responses
            .as_ref()
            .and_then(|(_, r)| r.outputs.get("responses"))
        {
            Some(o) => stats_of(store, o)?,
            None => None,
        };
        // the DPO commit tagged M(t+1), when its run trained on these pairs
        let next = format!("M{}", t + 1);
        let dpo = match (tags.iter().find(|(n, _)| *n == next), aift_obj) {
            (Some((_, c)), Some(aift)) => match store.read_commit(c)?.run {
                Some(r) => {
                    let rec = RunRecord::load(store, r)?;
                    let on_these = rec.inputs.values().any(|o| o.id == aift.id);
                    (rec.stage.name == "dpo" && on_these).then(|| training(r, &rec))
                }
                None => None,
            },
            _ => None,
        };
        let pm = &pairs.metrics;
        let hist = |i: usize| {
            aift_stats
                .as_ref()
                .and_then(|s| s.scores.get(i))
                .map(|s| s.histogram.clone())
                .unwrap_or_default()
        };
        out.push(Iteration {
            t,
            model: format!("M{t}"),
            aift: format!("AIFT(M{t})"),
            commit,
            prompts_kept: prompts.as_ref().and_then(|(_, r)| u(&r.metrics, "kept")),
            prompt_attempts: prompts
                .as_ref()
                .and_then(|(_, r)| u(&r.metrics, "attempts")),
            candidates: judge.as_ref().and_then(|(_, r)| u(&r.metrics, "responses")),
            unparsed_scores: judge.as_ref().and_then(|(_, r)| u(&r.metrics, "unparsed")),
            pairs: u(pm, "pairs"),
            ties: u(pm, "ties"),
            too_few_scored: u(pm, "too_few_scored"),
            mean_score_chosen: f(pm, "mean_score_chosen"),
            mean_score_rejected: f(pm, "mean_score_rejected"),
            hist_chosen: hist(0),
            hist_rejected: hist(1),
            len_candidates: cand_stats
                .as_ref()
                .and_then(|s| s.lengths.first().and_then(|l| length(s, &l.field))),
            len_chosen: aift_stats.as_ref().and_then(|s| length(s, "chosen")),
            len_rejected: aift_stats.as_ref().and_then(|s| length(s, "rejected")),
            dpo,
        });
    }
    Ok(out)
}

/// Judge accuracy per model, from the `eval-judge` runs among `runs`.
pub fn judge_accuracy(runs: &[RunRow], labels: &Labels) -> Vec<JudgeAccuracy> {
    runs.iter()
        .filter(|r| r.stage == "eval-judge" && r.record.status == RunStatus::Ok)
        .map(|r| {
            let model = labels
                .inputs(&r.record.inputs)
                .into_iter()
                .find(|i| i.role == "model")
                .map(|i| i.label)
                .unwrap_or_else(|| "(server)".into());
            JudgeAccuracy {
                run: r.run,
                model,
                pairs: u(&r.metrics, "pairs"),
                agree: u(&r.metrics, "agree"),
                accuracy: f(&r.metrics, "accuracy"),
            }
        })
        .collect()
}

/// The AIFT diff between each two consecutive iterations (summary only).
pub fn aift_diffs(store: &Store, its: &[Iteration]) -> Result<Vec<AiftDiff>, ReportError> {
    let opts = DiffOptions {
        key: None,
        limit: 0,
        stat_only: true,
    };
    let mut out = Vec::new();
    for w in its.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let r = diff_revisions(
            store,
            &a.commit.to_hex(),
            &b.commit.to_hex(),
            &[layout::AIFT.to_string()],
            &opts,
            false,
        )?;
        let (summary, schema_changes) = match r.datasets.first() {
            Some(d) => (d.diff.summary, d.diff.schema_changes.len()),
            // the same file on both sides
            None => (
                Summary {
                    unchanged: a.pairs.unwrap_or(0),
                    ..Default::default()
                },
                0,
            ),
        };
        out.push(AiftDiff {
            a: a.aift.clone(),
            b: b.aift.clone(),
            summary,
            schema_changes,
        });
    }
    Ok(out)
}
