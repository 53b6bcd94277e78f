//! Runs side by side (what `dvc exp show` and MLflow's run comparison give): one row per run
//! with its stage, times, inputs named by tag (`M2`, `AIFT(M2)`), the parameters that differ
//! between the rows shown, metrics and status. [`list_runs`] gathers the rows; the CLI draws
//! the table, the report reuses the rows.
//!
//! [`key_figures`] says how many steps and examples training figures come from: DPO's reward
//! accuracy after one step is 0 by construction (the policy is still the reference, every
//! margin is 0), which reads as broken without the count beside it.
//!
//! Inputs are named by tag when a tagged commit's run produced them (a checkpoint's files are
//! one input: the tag whose run produced every one of them), or when a tagged commit without a
//! run (a base model committed by hand, `M0`) holds them; otherwise by path.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;
use srlm_store::{CommitId, ObjectId, RunId, Store};

use crate::provenance::{ObjectRef, ProvenanceError, RunRecord, RunStatus};
use crate::stages::record::{pending_run, Metrics};

/// Errors while gathering runs.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    #[error(transparent)]
    Record(#[from] crate::stages::record::RecordError),
    #[error("{rev}: commit {commit} has no run record (it was committed by hand)")]
    NoRun { rev: String, commit: String },
}

/// One input of a run as shown: its role (a checkpoint's files are one role), and a label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputLabel {
    /// `policy`, `pairs`, … (the part of `policy/model.safetensors` before the slash).
    pub role: String,
    /// The tag naming it (`M2`, `AIFT(M2)`), else its path (a folder for a checkpoint).
    pub label: String,
    /// True when `label` is a tag.
    pub tagged: bool,
}

/// `ok`, `failed`, or `pending` (outputs staged with `--no-commit`, not yet committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    Ok,
    Failed,
    Pending,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Ok => "ok",
            RowStatus::Failed => "failed",
            RowStatus::Pending => "pending",
        }
    }
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub run: RunId,
    /// The commit holding its outputs (none for a failed or pending run).
    pub commit: Option<CommitId>,
    /// Tags on that commit.
    pub tags: Vec<String>,
    pub stage: String,
    pub version: String,
    pub started: String,
    pub finished: String,
    /// Wall time from start to finish.
    pub seconds: Option<f64>,
    pub status: RowStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub inputs: Vec<InputLabel>,
    /// The parameters (dotted paths: `train.lr`) whose values differ between the shown rows of
    /// the same stage; absent ones are `null`.
    pub params: BTreeMap<String, Value>,
    pub metrics: BTreeMap<String, Value>,
    /// The full record (not in `--json`: `srlm show` prints it).
    #[serde(skip)]
    pub record: RunRecord,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// Exactly the runs of these revisions' commits; empty: every run in HEAD's history (oldest
    /// first), the pending run, and failed attempts on the same inputs.
    pub revs: Vec<String>,
    /// Without `revs`: the histories to list (empty: HEAD's).
    pub from: Vec<String>,
    /// Only runs of this stage.
    pub stage: Option<String>,
}

/// Names objects by tag.
pub struct Labels {
    /// Object id → tags whose run produced it (or whose run-less commit holds it).
    by_object: HashMap<ObjectId, BTreeSet<String>>,
    /// Commit → its tags.
    by_commit: HashMap<CommitId, Vec<String>>,
}

impl Labels {
    pub fn new(store: &Store) -> Result<Labels, RunsError> {
        let mut by_object: HashMap<ObjectId, BTreeSet<String>> = HashMap::new();
        let mut by_commit: HashMap<CommitId, Vec<String>> = HashMap::new();
        for (name, commit) in store.tags()? {
            by_commit.entry(commit).or_default().push(name.clone());
            let c = store.read_commit(&commit)?;
            let ids: Vec<ObjectId> = match c.run {
                Some(run) => RunRecord::load(store, run)?
                    .outputs
                    .values()
                    .map(|o| o.id)
                    .collect(),
                None => {
                    // a commit without a run (M0, the seed data): its files and its units
                    // (a checkpoint folder is one input)
                    let t = store.read_tree(&c.tree)?;
                    t.entries
                        .values()
                        .chain(t.units.values())
                        .map(|e| e.id.0)
                        .collect()
                }
            };
            for id in ids {
                by_object.entry(id).or_default().insert(name.clone());
            }
        }
        Ok(Labels {
            by_object,
            by_commit,
        })
    }

    /// Tags on `commit`.
    pub fn tags_of(&self, commit: &CommitId) -> Vec<String> {
        self.by_commit.get(commit).cloned().unwrap_or_default()
    }

    /// The tag naming every one of `objs` (the first by name when several do).
    pub fn tag_of(&self, objs: &[&ObjectRef]) -> Option<String> {
        let mut common: Option<BTreeSet<String>> = None;
        for o in objs {
            let tags = self.by_object.get(&o.id).cloned().unwrap_or_default();
            common = Some(match common {
                None => tags,
                Some(c) => c.intersection(&tags).cloned().collect(),
            });
        }
        common.and_then(|c| c.into_iter().next())
    }

    /// The tag naming `objs`, else their path (or shared folder).
    pub fn label(&self, objs: &[&ObjectRef]) -> String {
        self.tag_of(objs).unwrap_or_else(|| common_path(objs))
    }

    /// A run's inputs, grouped by role (`policy/config.json` and `policy/model.safetensors`
    /// are one input `policy`) and labelled.
    pub fn inputs(&self, inputs: &BTreeMap<String, ObjectRef>) -> Vec<InputLabel> {
        let mut groups: BTreeMap<&str, Vec<&ObjectRef>> = BTreeMap::new();
        for (role, o) in inputs {
            let group = role.split_once('/').map_or(role.as_str(), |(g, _)| g);
            groups.entry(group).or_default().push(o);
        }
        groups
            .into_iter()
            .map(|(role, objs)| match self.tag_of(&objs) {
                Some(tag) => InputLabel {
                    role: role.to_string(),
                    label: tag,
                    tagged: true,
                },
                None => InputLabel {
                    role: role.to_string(),
                    label: common_path(&objs),
                    tagged: false,
                },
            })
            .collect()
    }
}

/// One file's path, or the folder several files share.
fn common_path(objs: &[&ObjectRef]) -> String {
    let first = objs.first().map(|o| o.path.as_str()).unwrap_or("");
    if objs.len() < 2 {
        return first.to_string();
    }
    let mut prefix: Vec<&str> = first.split('/').collect();
    prefix.pop();
    for o in &objs[1..] {
        let parts: Vec<&str> = o.path.split('/').collect();
        let n = prefix
            .iter()
            .zip(&parts)
            .take_while(|(a, b)| a == b)
            .count();
        prefix.truncate(n);
    }
    match prefix.is_empty() {
        true => first.to_string(),
        false => format!("{}/", prefix.join("/")),
    }
}

/// The metrics worth a glance, in this order.
const KEYS: [&str; 15] = [
    "kept",
    "responses",
    "unparsed",
    "mean_score",
    "pairs",
    "wins",
    "ties",
    "losses",
    "mean_score_chosen",
    "mean_score_rejected",
    "final_loss",
    "reward_accuracy",
    "accuracy",
    "ift_rows",
    "eft_rows",
];

fn number(k: &str, v: &Value) -> String {
    match v.as_f64() {
        Some(f) if v.is_f64() => format!("{k} {f:.3}"),
        _ => format!("{k} {v}"),
    }
}

fn plural(n: u64, one: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        _ => format!("{n} {one}s"),
    }
}

/// `kept 4, …` or, for a training run, `final_loss 0.693, reward_accuracy 0.000 (1 step, 3 pairs)`.
pub fn key_figures(stage: &str, m: &Metrics) -> String {
    let (figures, basis) = key_figure_parts(stage, m);
    let line = figures.join(", ");
    match basis {
        Some(b) => format!("{line} {b}"),
        None => line,
    }
}

/// The key figures one by one, and for a training run what they come from (`(1 step, 3 pairs)`).
pub fn key_figure_parts(stage: &str, m: &Metrics) -> (Vec<String>, Option<String>) {
    let figures: Vec<String> = KEYS
        .iter()
        .filter_map(|k| m.get(*k).filter(|v| !v.is_null()).map(|v| number(k, v)))
        .collect();
    let basis = match (
        m.get("steps").and_then(Value::as_u64),
        m.get("examples").and_then(Value::as_u64),
    ) {
        (Some(steps), Some(examples)) => {
            let unit = if stage == "dpo" { "pair" } else { "example" };
            Some(format!(
                "({}, {})",
                plural(steps, "step"),
                plural(examples, unit)
            ))
        }
        _ => None,
    };
    (figures, basis)
}

/// Seconds between two RFC 3339 timestamps.
pub fn seconds_between(started: &str, finished: &str) -> Option<f64> {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    let d = parse(finished)? - parse(started)?;
    Some(d.as_seconds_f64())
}

/// Flatten a JSON object into dotted paths (arrays and scalars are leaves).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = match prefix {
                    "" => k.clone(),
                    _ => format!("{prefix}.{k}"),
                };
                flatten(&p, x, out);
            }
        }
        _ if prefix.is_empty() => {}
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// For every row, the parameters that differ between the rows of its stage.
fn varying_params(records: &[&RunRecord]) -> Vec<BTreeMap<String, Value>> {
    let flat: Vec<BTreeMap<String, Value>> = records
        .iter()
        .map(|r| {
            let mut m = BTreeMap::new();
            flatten("", &r.params, &mut m);
            m
        })
        .collect();
    let mut by_stage: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        by_stage.entry(r.stage.name.as_str()).or_default().push(i);
    }
    let mut out = vec![BTreeMap::new(); records.len()];
    for rows in by_stage.values() {
        let keys: BTreeSet<&String> = rows.iter().flat_map(|&i| flat[i].keys()).collect();
        for k in keys {
            let vals: Vec<Option<&Value>> = rows.iter().map(|&i| flat[i].get(k)).collect();
            if vals.iter().all(|v| *v == vals[0]) {
                continue;
            }
            for (&i, v) in rows.iter().zip(vals) {
                out[i].insert(k.clone(), v.cloned().unwrap_or(Value::Null));
            }
        }
    }
    out
}

/// The commits of the histories of `from` (empty: HEAD's), oldest first, each once.
pub fn history(
    store: &Store,
    from: &[String],
) -> Result<Vec<(CommitId, srlm_store::Commit)>, RunsError> {
    let tips: Vec<CommitId> = match from {
        [] => store.head()?.commit().into_iter().collect(),
        revs => revs
            .iter()
            .map(|r| store.resolve(r))
            .collect::<Result<_, _>>()?,
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for tip in tips {
        let mut log = store.log(&tip)?;
        log.reverse();
        out.extend(log.into_iter().filter(|(id, _)| seen.insert(*id)));
    }
    out.sort_by(|a, b| a.1.time.cmp(&b.1.time));
    Ok(out)
}

/// The runs `q` asks for, oldest first.
pub fn list_runs(store: &Store, q: &RunQuery) -> Result<Vec<RunRow>, RunsError> {
    let labels = Labels::new(store)?;
    // (run, commit, status)
    let mut picked: Vec<(RunId, Option<CommitId>, RowStatus)> = Vec::new();
    if q.revs.is_empty() {
        let mut seen = HashSet::new();
        for (id, c) in history(store, &q.from)? {
            if let Some(r) = c.run {
                if seen.insert(r) {
                    picked.push((r, Some(id), RowStatus::Ok));
                }
            }
        }
        if let Some(run) = pending_run(store)? {
            if !picked.iter().any(|(r, _, _)| *r == run) {
                picked.push((run, None, RowStatus::Pending));
            }
        }
    } else {
        for rev in &q.revs {
            let commit = store.resolve(rev)?;
            let run = store
                .read_commit(&commit)?
                .run
                .ok_or_else(|| RunsError::NoRun {
                    rev: rev.clone(),
                    commit: commit.short(),
                })?;
            picked.push((run, Some(commit), RowStatus::Ok));
        }
    }
    let mut records: Vec<RunRecord> = picked
        .iter()
        .map(|(r, _, _)| RunRecord::load(store, *r))
        .collect::<Result<_, _>>()?;
    if q.revs.is_empty() {
        // failed attempts consumed the same objects as the runs shown (a retry's inputs)
        let shown: HashSet<RunId> = picked.iter().map(|(r, _, _)| *r).collect();
        let mut objs: BTreeSet<ObjectId> = BTreeSet::new();
        for r in &records {
            objs.extend(r.inputs.values().chain(r.outputs.values()).map(|o| o.id));
        }
        let mut failed: BTreeSet<RunId> = BTreeSet::new();
        for o in objs {
            failed.extend(
                store
                    .runs_consuming(&o)?
                    .into_iter()
                    .filter(|r| !shown.contains(r)),
            );
        }
        for run in failed {
            let rec = RunRecord::load(store, run)?;
            if rec.status == RunStatus::Failed {
                picked.push((run, None, RowStatus::Failed));
                records.push(rec);
            }
        }
    }
    let mut rows: Vec<(RunId, Option<CommitId>, RowStatus, RunRecord)> = picked
        .into_iter()
        .zip(records)
        .map(|((r, c, s), rec)| (r, c, s, rec))
        .filter(|(_, _, _, rec)| q.stage.as_ref().map_or(true, |s| *s == rec.stage.name))
        .collect();
    if q.revs.is_empty() {
        // a stable sort: runs of the same instant keep history order
        rows.sort_by(|a, b| a.3.started.cmp(&b.3.started));
    }
    let recs: Vec<&RunRecord> = rows.iter().map(|r| &r.3).collect();
    let params = varying_params(&recs);
    Ok(rows
        .into_iter()
        .zip(params)
        .map(|((run, commit, status, rec), params)| RunRow {
            run,
            commit,
            tags: commit.map(|c| labels.tags_of(&c)).unwrap_or_default(),
            stage: rec.stage.name.clone(),
            version: rec.stage.version.clone(),
            started: rec.started.clone(),
            finished: rec.finished.clone(),
            seconds: seconds_between(&rec.started, &rec.finished),
            status: match rec.status {
                RunStatus::Failed => RowStatus::Failed,
                RunStatus::Ok => status,
            },
            error: rec.error.clone(),
            inputs: labels.inputs(&rec.inputs),
            params,
            metrics: rec.metrics.clone(),
            record: rec,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::{EnvInfo, StageInfo, RUN_TYPE};
    use srlm_store::EntryKind;

    fn rec(stage: &str, params: Value) -> RunRecord {
        RunRecord {
            type_: RUN_TYPE.into(),
            stage: StageInfo {
                name: stage.into(),
                version: "1".into(),
            },
            replay: None,
            inputs: Default::default(),
            params,
            engine: Value::Null,
            code: None,
            env: EnvInfo::current(),
            outputs: Default::default(),
            metrics: Default::default(),
            started: "2026-01-01T00:00:00.000Z".into(),
            finished: "2026-01-01T00:01:30.500Z".into(),
            status: RunStatus::Ok,
            error: None,
        }
    }

    #[test]
    fn only_parameters_that_differ_within_a_stage_are_shown() {
        let a = rec(
            "dpo",
            serde_json::json!({"beta": 0.1, "train": {"lr": 1e-6, "seed": 4}}),
        );
        let b = rec(
            "dpo",
            serde_json::json!({"beta": 0.1, "train": {"lr": 1e-6, "seed": 1004}}),
        );
        let c = rec("judge", serde_json::json!({"samples": 3}));
        let d = rec(
            "judge",
            serde_json::json!({"samples": 3, "method": "digits"}),
        );
        let v = varying_params(&[&a, &b, &c, &d]);
        assert_eq!(v[0], BTreeMap::from([("train.seed".into(), 4.into())]));
        assert_eq!(v[1], BTreeMap::from([("train.seed".into(), 1004.into())]));
        assert_eq!(v[2], BTreeMap::from([("method".into(), Value::Null)]));
        assert_eq!(v[3], BTreeMap::from([("method".into(), "digits".into())]));
        assert_eq!(seconds_between(&a.started, &a.finished), Some(90.5));
    }

    #[test]
    fn a_checkpoint_is_one_input_named_by_the_tag_that_made_all_its_files() {
        let o = |path: &str, bytes: &str| {
            ObjectRef::new(ObjectId::of(bytes.as_bytes()), EntryKind::File, path)
        };
        let set = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let labels = Labels {
            by_object: HashMap::from([
                (ObjectId::of(b"config"), set(&["M2", "M3"])),
                (ObjectId::of(b"w2"), set(&["M2"])),
            ]),
            by_commit: HashMap::new(),
        };
        let inputs = BTreeMap::from([
            (
                "policy/config.json".to_string(),
                o("model/config.json", "config"),
            ),
            (
                "policy/model.safetensors".to_string(),
                o("model/model.safetensors", "w2"),
            ),
            ("seeds".to_string(), o("seed/ift.jsonl", "seeds")),
            ("base/a".to_string(), o("base/tiny/a", "a")),
            ("base/b".to_string(), o("base/tiny/b", "b")),
        ]);
        let l = labels.inputs(&inputs);
        let shown: Vec<(&str, &str, bool)> = l
            .iter()
            .map(|i| (i.role.as_str(), i.label.as_str(), i.tagged))
            .collect();
        assert_eq!(
            shown,
            [
                ("base", "base/tiny/", false),
                ("policy", "M2", true),
                ("seeds", "seed/ift.jsonl", false)
            ]
        );
    }

    #[test]
    fn training_figures_say_what_they_come_from() {
        let m: Metrics = serde_json::from_value(serde_json::json!({
            "steps": 1, "examples": 3, "final_loss": 0.6932, "reward_accuracy": 0.0,
            "seconds": 12.5
        }))
        .unwrap();
        assert_eq!(
            key_figures("dpo", &m),
            "final_loss 0.693, reward_accuracy 0.000 (1 step, 3 pairs)"
        );
        let m: Metrics =
            serde_json::from_value(serde_json::json!({"kept": 4, "attempts": 9})).unwrap();
        assert_eq!(key_figures("gen-prompts", &m), "kept 4");
    }
}
