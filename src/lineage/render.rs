//! Drawing a [`Lineage`]: a text tree that fits a screen (an object or run met again is one
//! line, tags beside ids, models first), JSON with every link's provenance, Graphviz dot and
//! Mermaid.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{json, Value};
use srlm_store::{EntryKind, ObjectId, RunId};

use super::{Direction, Lineage, RunNode};
use crate::provenance::ObjectRef;

fn short(id: impl std::fmt::Display) -> String {
    id.to_string().chars().take(12).collect()
}

/// The branch drawn before an item and the prefix its children continue with.
fn branch(last: bool) -> (&'static str, &'static str) {
    if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    }
}

/// A run's inputs (or outputs) with models first, then by role: the chain of models reads
/// down the left edge.
fn ordered(m: &BTreeMap<String, ObjectRef>) -> Vec<(&String, &ObjectRef)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by_key(|(role, o)| (o.kind != EntryKind::Checkpoint, role.as_str()));
    v
}

/// What the text walk has printed so far.
#[derive(Default)]
struct Shown {
    out: String,
    objs: BTreeSet<ObjectId>,
    runs: BTreeSet<RunId>,
}

impl Lineage {
    fn run(&self, id: RunId) -> &RunNode {
        self.runs
            .iter()
            .find(|r| r.id == id)
            .expect("edges only name runs in the walk")
    }

    /// The tags of the commit an object was made at (or read from, for a root).
    pub fn object_tags(&self, o: &ObjectRef) -> Vec<String> {
        self.at
            .get(&o.id)
            .and_then(|c| self.tags.get(c))
            .cloned()
            .unwrap_or_default()
    }

    fn run_tags(&self, r: &RunNode) -> Vec<String> {
        r.commit
            .and_then(|c| self.tags.get(&c))
            .cloned()
            .unwrap_or_default()
    }

    fn obj_label(&self, o: &ObjectRef) -> String {
        let tags = self.object_tags(o);
        let tags = if tags.is_empty() {
            String::new()
        } else {
            format!(" {}", tags.join(", "))
        };
        format!("{} [{} {}]{tags}", o.path, o.kind.as_str(), short(o.id))
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
        let mut s = Shown::default();
        for o in &self.start {
            self.text_object(&mut s, "", "", None, o);
        }
        s.out
    }

    fn text_object(
        &self,
        s: &mut Shown,
        lead: &str,
        cont: &str,
        role: Option<&str>,
        o: &ObjectRef,
    ) {
        // `srlm run` names outputs by path: no need to say it twice
        let role = match role {
            Some(r) if r != o.path => format!("{r}: "),
            _ => String::new(),
        };
        let again = !s.objs.insert(o.id);
        let link = self.edges.get(&o.id);
        let note = if self.cut.contains(&o.id) {
            "  (deeper runs not shown)"
        } else if link.is_none() {
            match self.direction {
                Direction::Up => "  (root)",
                Direction::Down => "  (leaf)",
            }
        } else if again {
            "  (see above)"
        } else {
            ""
        };
        writeln!(s.out, "{lead}{role}{}{note}", self.obj_label(o)).unwrap();
        let Some(link) = link.filter(|_| !again) else {
            return;
        };
        for (i, rid) in link.runs.iter().enumerate() {
            let (b, c) = branch(i + 1 == link.runs.len());
            self.text_run(s, &format!("{cont}{b}"), &format!("{cont}{c}"), *rid);
        }
    }

    fn text_run(&self, s: &mut Shown, lead: &str, cont: &str, rid: RunId) {
        let node = self.run(rid);
        if !s.runs.insert(rid) {
            writeln!(s.out, "{lead}{}  (see above)", Self::run_line(node)).unwrap();
            return;
        }
        writeln!(s.out, "{lead}{}", Self::run_line(node)).unwrap();
        let next = match self.direction {
            Direction::Up => &node.record.inputs,
            Direction::Down => &node.record.outputs,
        };
        let next = ordered(next);
        for (j, (role, o)) in next.iter().enumerate() {
            let (b, c) = branch(j + 1 == next.len());
            self.text_object(
                s,
                &format!("{cont}{b}"),
                &format!("{cont}{c}"),
                Some(role),
                o,
            );
        }
    }

    fn obj_json(&self, o: &ObjectRef) -> Value {
        let link = self.edges.get(&o.id);
        json!({
            "id": o.id.to_string(),
            "kind": o.kind,
            "path": o.path,
            "source": o.source,
            "tags": self.object_tags(o),
            // how the walk linked it: `source` (the recorded commit) or `content` (by id:
            // a working-tree input, or a record from before sources were recorded)
            "matched": link.map(|l| l.matched.as_str()),
            "runs": link.map(|l| l.runs.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
        })
    }

    /// JSON: `{direction, max_depth, start, runs: [{id, depth, stage, version, status, commit,
    /// tags, inputs, outputs, …}], ends, truncated}`; every object says where it came from
    /// (`source`), how it was linked (`matched`) and to which runs.
    pub fn to_json(&self) -> Value {
        let objs = |m: &BTreeMap<String, ObjectRef>| -> Value {
            m.iter()
                .map(|(k, o)| (k.clone(), self.obj_json(o)))
                .collect()
        };
        let list = |v: &[ObjectRef]| -> Value { v.iter().map(|o| self.obj_json(o)).collect() };
        json!({
            "direction": match self.direction { Direction::Up => "up", Direction::Down => "down" },
            "max_depth": self.max_depth,
            "start": list(&self.start),
            "runs": self.runs.iter().map(|r| json!({
                "id": r.id.to_string(),
                "depth": r.depth,
                "stage": r.record.stage.name,
                "version": r.record.stage.version,
                "status": r.record.status,
                "started": r.record.started,
                "finished": r.record.finished,
                "commit": r.commit.map(|c| c.to_string()),
                "tags": self.run_tags(r),
                "code": r.record.code,
                "params": r.record.params,
                "metrics": r.record.metrics,
                "inputs": objs(&r.record.inputs),
                "outputs": objs(&r.record.outputs),
            })).collect::<Vec<_>>(),
            "ends": list(&self.ends),
            "truncated": self.cut.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
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

    /// Graphviz dot: objects as ellipses (with their tags), runs as boxes, edges input → run
    /// → output.
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
            let tags = self.object_tags(o);
            let label = if tags.is_empty() {
                o.path.clone()
            } else {
                format!("{} ({})", o.path, tags.join(", "))
            };
            lines.push((g.object)(&short(id), &label));
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
