//! The walk on an in-memory [`RunIndex`]: runs, a linear history of commits and tags.
use super::*;
use crate::provenance::{EnvInfo, RunStatus, StageInfo, RUN_TYPE};
use srlm_store::EntryKind;

/// An in-memory index: runs by id, commits oldest first (each holding at most one run), tags.
#[derive(Default)]
struct Mem {
    runs: Vec<(RunId, RunRecord)>,
    commits: Vec<(CommitId, Option<RunId>)>,
    tags: Vec<(String, CommitId)>,
}

impl RunIndex for Mem {
    fn producing(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError> {
        Ok(self
            .runs
            .iter()
            .filter(|(_, r)| r.outputs.values().any(|o| o.id == id))
            .map(|(i, _)| *i)
            .collect())
    }
    fn consuming(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError> {
        Ok(self
            .runs
            .iter()
            .filter(|(_, r)| r.inputs.values().any(|o| o.id == id))
            .map(|(i, _)| *i)
            .collect())
    }
    fn record(&self, id: RunId) -> Result<RunRecord, LineageError> {
        Ok(self.runs.iter().find(|(i, _)| *i == id).unwrap().1.clone())
    }
    fn produced_at(
        &self,
        commit: CommitId,
        id: ObjectId,
    ) -> Result<Option<(CommitId, RunId)>, LineageError> {
        let at = self.commits.iter().position(|(c, _)| *c == commit).unwrap();
        for (c, run) in self.commits[..=at].iter().rev() {
            if let Some(run) = run {
                if self.record(*run)?.outputs.values().any(|o| o.id == id) {
                    return Ok(Some((*c, *run)));
                }
            }
        }
        Ok(None)
    }
    fn tags(&self) -> Result<Vec<(String, CommitId)>, LineageError> {
        Ok(self.tags.clone())
    }
}

fn obj(name: &str) -> ObjectRef {
    let kind = if name.starts_with('m') {
        EntryKind::Checkpoint
    } else {
        EntryKind::Dataset
    };
    ObjectRef::new(ObjectId::of(name.as_bytes()), kind, name)
}

fn commit_id(n: &str) -> CommitId {
    CommitId(ObjectId::of(format!("commit {n}").as_bytes()))
}

fn rec(name: &str, started: &str, inputs: &[(&str, &str)], outputs: &[&str]) -> (RunId, RunRecord) {
    let r = RunRecord {
        type_: RUN_TYPE.into(),
        stage: StageInfo {
            name: name.split('#').next().unwrap().into(),
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
    (RunId(ObjectId::of(name.as_bytes())), r)
}

/// sft(ift, eft) -> m1; gen(m1) -> prompts; dpo(m1 as policy, prompts) -> m2; records without
/// sources (as written before sources were recorded).
fn chain() -> Mem {
    Mem {
        runs: vec![
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
        ],
        ..Default::default()
    }
}

#[test]
fn upstream_reaches_roots_once_per_run() {
    let l = walk(&chain(), vec![obj("m2")], Direction::Up, None).unwrap();
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
    // m1 is met twice (policy of dpo, model of gen): expanded once, then one line
    assert_eq!(text.matches("sft v1").count(), 1, "{text}");
    assert_eq!(text.matches("(see above)").count(), 1, "{text}");
    assert!(text.contains("ift: ift.jsonl [dataset"), "{text}");
    assert!(text.contains("(root)"), "{text}");
    // the model comes first under dpo
    let policy = text.find("policy: m1").unwrap();
    assert!(policy < text.find("pairs: prompts").unwrap(), "{text}");
    // old records: linked by content, and JSON says so
    let j = l.to_json();
    assert_eq!(j["runs"][0]["inputs"]["policy"]["matched"], "content");
    assert!(j["runs"][0]["inputs"]["policy"]["source"].is_null());
}

#[test]
fn downstream_and_graph_formats() {
    let l = walk(&chain(), vec![obj("ift.jsonl")], Direction::Down, None).unwrap();
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

/// Two training runs write the same bytes (`cfg`); the second runs after the consumer. By
/// content the later run would be a producer too; the walk never links to it.
#[test]
fn content_matching_never_links_to_a_later_run() {
    let mem = Mem {
        runs: vec![
            rec("sft", "2026-01-01", &[("base", "m0")], &["cfg", "m1"]),
            rec("judge", "2026-01-02", &[("config", "cfg")], &["scores"]),
            rec("dpo", "2026-01-03", &[("base", "m1")], &["cfg", "m2"]),
        ],
        ..Default::default()
    };
    let l = walk(&mem, vec![obj("scores")], Direction::Up, None).unwrap();
    let stages: Vec<_> = l
        .runs
        .iter()
        .map(|r| r.record.stage.name.as_str())
        .collect();
    assert_eq!(stages, vec!["judge", "sft"]);
}

/// Inputs with a recorded commit are linked to the run of that commit's history, even when a
/// later run made the same bytes; tags are shown beside ids; --depth cuts the walk.
#[test]
fn sourced_inputs_follow_their_commit_and_show_tags() {
    let (c0, c1, c2, c3) = (
        commit_id("m0"),
        commit_id("m1"),
        commit_id("gen"),
        commit_id("m2"),
    );
    let mut sft = rec("sft", "2026-01-01", &[("base", "m0")], &["m1", "cfg"]);
    sft.1.inputs.get_mut("base").unwrap().source = Some(InputSource::Commit {
        commit: c0,
        run: None,
    });
    let mut gen = rec("gen", "2026-01-02", &[("model", "m1")], &["prompts"]);
    gen.1.inputs.get_mut("model").unwrap().source = Some(InputSource::Commit {
        commit: c1,
        run: Some(sft.0),
    });
    let mut dpo = rec(
        "dpo",
        "2026-01-03",
        &[("policy", "m1"), ("pairs", "prompts")],
        &["m2", "cfg"],
    );
    for (role, c) in [("policy", c1), ("pairs", c2)] {
        dpo.1.inputs.get_mut(role).unwrap().source = Some(InputSource::Commit {
            commit: c,
            run: None,
        });
    }
    let mem = Mem {
        commits: vec![
            (c0, None),
            (c1, Some(sft.0)),
            (c2, Some(gen.0)),
            (c3, Some(dpo.0)),
        ],
        runs: vec![sft, gen, dpo],
        tags: vec![("M0".into(), c0), ("M1".into(), c1), ("M2".into(), c3)],
    };
    let mut start = obj("m2");
    start.source = Some(InputSource::Commit {
        commit: c3,
        run: None,
    });
    let l = walk(&mem, vec![start.clone()], Direction::Up, None).unwrap();
    let text = l.to_text();
    assert!(text.starts_with("m2 [checkpoint "), "{text}");
    assert!(text.lines().next().unwrap().ends_with(" M2"), "{text}");
    assert!(
        text.contains("policy: m1 [checkpoint") && text.contains("] M1"),
        "{text}"
    );
    assert!(
        text.contains("base: m0 [checkpoint") && text.contains("] M0  (root)"),
        "{text}"
    );
    let j = l.to_json();
    assert_eq!(j["runs"][0]["inputs"]["policy"]["matched"], "source");
    assert_eq!(j["runs"][0]["tags"], serde_json::json!(["M2"]));
    assert_eq!(j["runs"].as_array().unwrap().len(), 3);

    let l = walk(&mem, vec![start], Direction::Up, Some(1)).unwrap();
    assert_eq!(l.runs.len(), 1);
    let text = l.to_text();
    assert!(text.contains("(deeper runs not shown)"), "{text}");
}
