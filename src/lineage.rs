//! Lineage: walk run records upstream (what an object was made from, back to the roots) or
//! downstream (what was made from it), and render the walk as a text tree, JSON, Graphviz dot or
//! Mermaid.
//!
//! Lineage is the graph of output ids matching later input ids: the store's reverse index
//! ([`srlm_store::Store::runs_producing`], [`srlm_store::Store::runs_consuming`]) answers which
//! runs produced or consumed an object, and each run record lists its inputs and outputs.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};
use srlm_store::{ObjectId, RunId, Store};

use crate::provenance::{ObjectRef, ProvenanceError, RunRecord};

/// Errors while walking lineage.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
}

/// What the walk needs from a store: the reverse index and the records.
pub trait RunIndex {
    fn producing(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError>;
    fn consuming(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError>;
    fn record(&self, id: RunId) -> Result<RunRecord, LineageError>;
}

impl RunIndex for Store {
    fn producing(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError> {
        Ok(self.runs_producing(&id)?)
    }
    fn consuming(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError> {
        Ok(self.runs_consuming(&id)?)
    }
    fn record(&self, id: RunId) -> Result<RunRecord, LineageError> {
        Ok(RunRecord::load(self, id)?)
    }
}

/// Upstream (towards the roots) or downstream (towards what was derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// A run met on the walk.
#[derive(Debug, Clone)]
pub struct RunNode {
    pub id: RunId,
    pub record: RunRecord,
    /// Distance from the start (1 = produced / consumed a start object).
    pub depth: usize,
}

/// The result of a walk: the runs in breadth-first order from the start, and the objects where
/// the walk ended (upstream: objects no run produced; downstream: objects no run consumed).
#[derive(Debug, Clone)]
pub struct Lineage {
    pub direction: Direction,
    /// The objects the walk started from (a path's entry, or a commit run's outputs).
    pub start: Vec<ObjectRef>,
    pub runs: Vec<RunNode>,
    pub ends: Vec<ObjectRef>,
    /// Per object: the runs that produced (up) or consumed (down) it, in walk order.
    edges: BTreeMap<ObjectId, Vec<RunId>>,
}

/// Walk from `start` in `dir`. A run reached twice is listed once. Failed runs are skipped:
/// they produced nothing that was committed.
pub fn walk(
    index: &impl RunIndex,
    start: Vec<ObjectRef>,
    dir: Direction,
) -> Result<Lineage, LineageError> {
    let mut runs: Vec<RunNode> = Vec::new();
    let mut seen_runs: BTreeMap<RunId, usize> = BTreeMap::new();
    let mut seen_objs: BTreeSet<ObjectId> = BTreeSet::new();
    let mut edges: BTreeMap<ObjectId, Vec<RunId>> = BTreeMap::new();
    let mut ends = Vec::new();
    let mut queue: VecDeque<(ObjectRef, usize)> = start.iter().cloned().map(|o| (o, 0)).collect();
    while let Some((obj, depth)) = queue.pop_front() {
        if !seen_objs.insert(obj.id) {
            continue;
        }
        let ids = match dir {
            Direction::Up => index.producing(obj.id)?,
            Direction::Down => index.consuming(obj.id)?,
        };
        let mut linked = Vec::new();
        // in the order the runs happened (the index's order is by id, which means nothing)
        let mut found = Vec::new();
        for rid in ids {
            match seen_runs.get(&rid) {
                Some(&i) => found.push((runs[i].record.started.clone(), rid, None)),
                None => {
                    let record = index.record(rid)?;
                    found.push((record.started.clone(), rid, Some(record)));
                }
            }
        }
        found.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (_, rid, record) in found {
            let Some(record) = record else {
                linked.push(rid);
                continue;
            };
            if record.status != crate::provenance::RunStatus::Ok {
                continue;
            }
            let next = match dir {
                Direction::Up => &record.inputs,
                Direction::Down => &record.outputs,
            };
            for o in next.values() {
                queue.push_back((o.clone(), depth + 1));
            }
            seen_runs.insert(rid, runs.len());
            linked.push(rid);
            runs.push(RunNode {
                id: rid,
                record,
                depth: depth + 1,
            });
        }
        if linked.is_empty() {
            ends.push(obj);
        } else {
            edges.insert(obj.id, linked);
        }
    }
    Ok(Lineage {
        direction: dir,
        start,
        runs,
        ends,
        edges,
    })
}

fn short(id: impl std::fmt::Display) -> String {
    id.to_string().chars().take(12).collect()
}

fn obj_label(o: &ObjectRef) -> String {
    format!("{} [{} {}]", o.path, o.kind.as_str(), short(o.id))
}

impl Lineage {
    fn run(&self, id: RunId) -> &RunNode {
        self.runs
            .iter()
            .find(|r| r.id == id)
            .expect("edges only name runs in the walk")
    }

    fn run_line(r: &RunNode) -> String {
        let rec = &r.record;
        let dirty = match &rec.code {
            Some(c) if c.dirty => " (dirty code)",
            _ => "",
        };
        format!(
            "{} v{}  run {}  {}{}",
            rec.stage.name,
            rec.stage.version,
            short(r.id),
            rec.finished,
            dirty
        )
    }

    /// A text tree: objects and the runs that made (or used) them, nested.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut shown = BTreeSet::new();
        for o in &self.start {
            writeln!(out, "{}", obj_label(o)).unwrap();
            self.text_children(o.id, "", &mut shown, &mut out);
        }
        out
    }

    fn text_children(
        &self,
        obj: ObjectId,
        prefix: &str,
        shown: &mut BTreeSet<RunId>,
        out: &mut String,
    ) {
        let Some(run_ids) = self.edges.get(&obj) else {
            return;
        };
        for (i, rid) in run_ids.iter().enumerate() {
            let last = i + 1 == run_ids.len();
            let (branch, cont) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            let node = self.run(*rid);
            if !shown.insert(*rid) {
                writeln!(
                    out,
                    "{prefix}{branch}{} (shown above)",
                    Self::run_line(node)
                )
                .unwrap();
                continue;
            }
            writeln!(out, "{prefix}{branch}{}", Self::run_line(node)).unwrap();
            let next = match self.direction {
                Direction::Up => &node.record.inputs,
                Direction::Down => &node.record.outputs,
            };
            let p2 = format!("{prefix}{cont}");
            for (j, (role, o)) in next.iter().enumerate() {
                let last = j + 1 == next.len();
                let (b2, c2) = if last {
                    ("└─ ", "   ")
                } else {
                    ("├─ ", "│  ")
                };
                let end = if self.edges.contains_key(&o.id) {
                    ""
                } else if self.direction == Direction::Up {
                    "  (root)"
                } else {
                    "  (leaf)"
                };
                // `srlm run` names outputs by path: no need to say it twice
                let role = if *role == o.path {
                    String::new()
                } else {
                    format!("{role}: ")
                };
                writeln!(out, "{p2}{b2}{role}{}{end}", obj_label(o)).unwrap();
                self.text_children(o.id, &format!("{p2}{c2}"), shown, out);
            }
        }
    }

    /// JSON: `{direction, start, runs: [{id, depth, stage, version, status, inputs, outputs, …}], ends}`.
    pub fn to_json(&self) -> Value {
        let objs = |m: &BTreeMap<String, ObjectRef>| -> Value {
            m.iter()
                .map(|(k, o)| {
                    (
                        k.clone(),
                        json!({"id": o.id.to_string(), "kind": o.kind, "path": o.path}),
                    )
                })
                .collect()
        };
        let list = |v: &[ObjectRef]| -> Value {
            v.iter()
                .map(|o| json!({"id": o.id.to_string(), "kind": o.kind, "path": o.path}))
                .collect()
        };
        json!({
            "direction": match self.direction { Direction::Up => "up", Direction::Down => "down" },
            "start": list(&self.start),
            "runs": self.runs.iter().map(|r| json!({
                "id": r.id.to_string(),
                "depth": r.depth,
                "stage": r.record.stage.name,
                "version": r.record.stage.version,
                "status": r.record.status,
                "started": r.record.started,
                "finished": r.record.finished,
                "code": r.record.code,
                "params": r.record.params,
                "metrics": r.record.metrics,
                "inputs": objs(&r.record.inputs),
                "outputs": objs(&r.record.outputs),
            })).collect::<Vec<_>>(),
            "ends": list(&self.ends),
        })
    }

    /// Every object node: start, run inputs and outputs, deduplicated by id.
    fn all_objects(&self) -> BTreeMap<ObjectId, &ObjectRef> {
        let mut m = BTreeMap::new();
        for o in self.start.iter().chain(&self.ends) {
            m.entry(o.id).or_insert(o);
        }
        for r in &self.runs {
            for o in r.record.inputs.values().chain(r.record.outputs.values()) {
                m.entry(o.id).or_insert(o);
            }
        }
        m
    }

    /// Graphviz dot: objects as ellipses, runs as boxes, edges input → run → output.
    pub fn to_dot(&self) -> String {
        self.render(&GraphSyntax {
            head: "digraph lineage {\n  rankdir=LR;\n",
            tail: "}\n",
            object: |id, path| {
                format!(
                    "  \"o{id}\" [shape=ellipse, label=\"{}\\n{id}\"];",
                    esc(path)
                )
            },
            run: |id, name, version| {
                format!(
                    "  \"r{id}\" [shape=box, label=\"{} v{}\\nrun {id}\"];",
                    esc(name),
                    esc(version)
                )
            },
            input: |obj, run, role| {
                format!("  \"o{obj}\" -> \"r{run}\" [label=\"{}\"];", esc(role))
            },
            output: |run, obj| format!("  \"r{run}\" -> \"o{obj}\";"),
        })
    }

    /// Mermaid flowchart, same graph as [`Lineage::to_dot`].
    pub fn to_mermaid(&self) -> String {
        self.render(&GraphSyntax {
            head: "flowchart LR\n",
            tail: "",
            object: |id, path| format!("  o{id}([\"{}<br/>{id}\"])", mermaid_esc(path)),
            run: |id, name, version| {
                format!(
                    "  r{id}[\"{} v{}<br/>run {id}\"]",
                    mermaid_esc(name),
                    mermaid_esc(version)
                )
            },
            input: |obj, run, role| format!("  o{obj} -->|{}| r{run}", mermaid_esc(role)),
            output: |run, obj| format!("  r{run} --> o{obj}"),
        })
    }

    /// The graph (objects, runs, input and output edges) in one syntax.
    fn render(&self, g: &GraphSyntax) -> String {
        let mut lines = vec![g.head.trim_end().to_string()];
        for (id, o) in self.all_objects() {
            lines.push((g.object)(&short(id), &o.path));
        }
        for r in &self.runs {
            let (rid, rec) = (short(r.id), &r.record);
            lines.push((g.run)(&rid, &rec.stage.name, &rec.stage.version));
            for (role, o) in &rec.inputs {
                lines.push((g.input)(&short(o.id), &rid, role));
            }
            for o in rec.outputs.values() {
                lines.push((g.output)(&rid, &short(o.id)));
            }
        }
        lines.push(g.tail.to_string());
        let mut s = lines.join("\n");
        if !s.ends_with('\n') {
            s.push('\n');
        }
        s
    }
}

/// How one graph language writes nodes and edges (ids are short hex).
struct GraphSyntax {
    head: &'static str,
    tail: &'static str,
    object: fn(&str, &str) -> String,
    run: fn(&str, &str, &str) -> String,
    input: fn(&str, &str, &str) -> String,
    output: fn(&str, &str) -> String,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn mermaid_esc(s: &str) -> String {
    s.replace('"', "#quot;").replace('|', "#124;")
}

/// The objects a lineage walk (or a reproduction) starts from: for `REV:PATH` that file's
/// object; for a revision, the outputs of its commit's run, or every file of its tree when the
/// commit has no run; a path (relative to `cwd`) that is not a revision means `HEAD:path`.
pub fn start_objects(
    store: &Store,
    cwd: &Path,
    target: &str,
) -> Result<Vec<ObjectRef>, LineageError> {
    let spec =
        if !target.contains(':') && store.resolve(target).is_err() && cwd.join(target).exists() {
            format!("HEAD:{}", store.tree_path(cwd, Path::new(target))?)
        } else {
            target.to_string()
        };
    if spec.contains(':') {
        let (_, path, entry) = store.resolve_path(&spec)?;
        return Ok(vec![ObjectRef {
            id: entry.id.0,
            kind: entry.kind,
            path,
            external_path: None,
        }]);
    }
    let commit_id = store.resolve(&spec)?;
    let commit = store.read_commit(&commit_id)?;
    if let Some(run) = commit.run {
        let rec = RunRecord::load(store, run)?;
        if !rec.outputs.is_empty() {
            return Ok(rec.outputs.into_values().collect());
        }
    }
    let tree = store.read_tree(&commit.tree)?;
    Ok(tree
        .entries
        .into_iter()
        .map(|(path, e)| ObjectRef {
            id: e.id.0,
            kind: e.kind,
            path,
            external_path: None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::{EnvInfo, RunStatus, StageInfo, RUN_TYPE};
    use srlm_store::EntryKind;

    /// An in-memory index: runs by id.
    struct Mem(Vec<(RunId, RunRecord)>);

    impl RunIndex for Mem {
        fn producing(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError> {
            Ok(self
                .0
                .iter()
                .filter(|(_, r)| r.outputs.values().any(|o| o.id == id))
                .map(|(i, _)| *i)
                .collect())
        }
        fn consuming(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError> {
            Ok(self
                .0
                .iter()
                .filter(|(_, r)| r.inputs.values().any(|o| o.id == id))
                .map(|(i, _)| *i)
                .collect())
        }
        fn record(&self, id: RunId) -> Result<RunRecord, LineageError> {
            Ok(self.0.iter().find(|(i, _)| *i == id).unwrap().1.clone())
        }
    }

    fn obj(name: &str) -> ObjectRef {
        ObjectRef {
            id: ObjectId::of(name.as_bytes()),
            kind: EntryKind::Dataset,
            path: name.to_string(),
            external_path: None,
        }
    }

    fn rec(
        stage: &str,
        started: &str,
        inputs: &[(&str, &str)],
        outputs: &[&str],
    ) -> (RunId, RunRecord) {
        let r = RunRecord {
            type_: RUN_TYPE.into(),
            stage: StageInfo {
                name: stage.into(),
                version: "1".into(),
            },
            replay: None,
            inputs: inputs
                .iter()
                .map(|(role, n)| (role.to_string(), obj(n)))
                .collect(),
            params: serde_json::json!({}),
            engine: serde_json::json!({}),
            code: None,
            env: EnvInfo::current(),
            outputs: outputs.iter().map(|n| (n.to_string(), obj(n))).collect(),
            metrics: Default::default(),
            started: started.to_string(),
            finished: started.to_string(),
            status: RunStatus::Ok,
            error: None,
        };
        (RunId(ObjectId::of(stage.as_bytes())), r)
    }

    /// sft(ift, eft) -> m1; gen(m1) -> prompts; dpo(m1 as policy and reference, prompts) -> m2
    fn chain() -> Mem {
        Mem(vec![
            rec(
                "sft",
                "2026-01-01",
                &[("ift", "ift.jsonl"), ("eft", "eft.jsonl")],
                &["m1"],
            ),
            rec("gen", "2026-01-02", &[("model", "m1")], &["prompts"]),
            rec(
                "dpo",
                "2026-01-03",
                &[("policy", "m1"), ("pairs", "prompts")],
                &["m2"],
            ),
        ])
    }

    #[test]
    fn upstream_reaches_roots_once_per_run() {
        let l = walk(&chain(), vec![obj("m2")], Direction::Up).unwrap();
        let stages: Vec<_> = l
            .runs
            .iter()
            .map(|r| (r.record.stage.name.as_str(), r.depth))
            .collect();
        assert_eq!(stages, vec![("dpo", 1), ("gen", 2), ("sft", 2)]);
        let mut ends: Vec<_> = l.ends.iter().map(|o| o.path.as_str()).collect();
        ends.sort();
        assert_eq!(ends, vec!["eft.jsonl", "ift.jsonl"]);
        let text = l.to_text();
        assert_eq!(text.matches("sft v1").count(), 2, "{text}");
        assert_eq!(text.matches("(shown above)").count(), 1, "{text}");
        assert!(text.contains("ift: ift.jsonl [dataset"), "{text}");
        assert!(text.contains("(root)"), "{text}");
    }

    #[test]
    fn downstream_and_graph_formats() {
        let l = walk(&chain(), vec![obj("ift.jsonl")], Direction::Down).unwrap();
        let stages: Vec<_> = l
            .runs
            .iter()
            .map(|r| r.record.stage.name.as_str())
            .collect();
        assert_eq!(stages, vec!["sft", "gen", "dpo"]);
        assert_eq!(
            l.ends.iter().map(|o| o.path.as_str()).collect::<Vec<_>>(),
            vec!["m2"]
        );
        let dot = l.to_dot();
        assert!(dot.starts_with("digraph lineage {"));
        // 3 runs: 5 input edges, 3 output edges
        assert_eq!(dot.matches(" -> ").count(), 8, "{dot}");
        let mm = l.to_mermaid();
        assert_eq!(mm.matches("-->").count(), 8, "{mm}");
        let j = l.to_json();
        assert_eq!(j["direction"], "down");
        assert_eq!(j["runs"].as_array().unwrap().len(), 3);
    }
}
