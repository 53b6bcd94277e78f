//! Provenance, lineage and hooks driven through the binary; `srlm run` and `srlm reproduce`
//! are in [`reproduce`].
#[path = "../common/mod.rs"]
mod common;
mod reproduce;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

fn srlm(dir: &Path, args: &[&str]) -> Output {
    common::srlm()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("srlm runs")
}

/// Run srlm and require success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = srlm(dir, args);
    assert!(
        out.status.success(),
        "srlm {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).expect("JSON output")
}

/// `list[i][field]` for every element of a JSON list of objects.
fn field_of_each<'a>(list: &'a Value, field: &str) -> Vec<&'a str> {
    let items = list.as_array().expect("a JSON list");
    items
        .iter()
        .map(|x| x[field].as_str().expect("a string field"))
        .collect()
}

fn init_store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    ok(d.path(), &["init"]);
    d
}

fn write(dir: &Path, rel: &str, text: &str) {
    std::fs::write(dir.join(rel), text).unwrap();
}

fn commit_count(dir: &Path) -> usize {
    let out = srlm(dir, &["log", "--oneline"]);
    if !out.status.success() {
        return 0; // no commit yet
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn head(dir: &Path) -> String {
    ok(dir, &["log", "--oneline"])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// a.jsonl (plain commit) -> filter -> b.jsonl -> pairs -> c.jsonl, with manual provenance.
fn three_commit_chain() -> tempfile::TempDir {
    let d = init_store();
    let p = d.path();
    write(
        p,
        "a.jsonl",
        "{\"prompt\":\"x\"}\n{\"prompt\":\"y\"}\n{\"prompt\":\"z\"}\n",
    );
    ok(p, &["add", "a.jsonl"]);
    ok(p, &["commit", "-m", "seed prompts"]);
    write(p, "b.jsonl", "{\"prompt\":\"x\"}\n{\"prompt\":\"y\"}\n");
    ok(p, &["add", "b.jsonl"]);
    ok(
        p,
        &[
            "commit",
            "-m",
            "filtered",
            "--stage",
            "filter",
            "--input",
            "src=HEAD:a.jsonl",
            "--param",
            "min_len=1",
            "--param",
            "model=\"m0\"",
            "--metric",
            "kept=2",
        ],
    );
    write(
        p,
        "c.jsonl",
        "{\"prompt\":\"x\",\"chosen\":\"a\",\"rejected\":\"b\"}\n",
    );
    ok(p, &["add", "c.jsonl"]);
    ok(
        p,
        &[
            "commit",
            "-m",
            "pairs",
            "--stage",
            "pairs",
            "--input",
            "prompts=HEAD:b.jsonl",
            "--input",
            "seed=HEAD:a.jsonl",
        ],
    );
    d
}

#[test]
fn lineage_of_a_three_commit_chain_with_manual_provenance() {
    let d = three_commit_chain();
    let p = d.path();
    assert_eq!(commit_count(p), 3);

    let j = json(p, &["lineage", "HEAD:c.jsonl", "--format", "json"]);
    assert_eq!(j["direction"], "up");
    assert_eq!(j["start"][0]["path"], "c.jsonl");
    let runs = j["runs"].as_array().unwrap();
    let stages: Vec<(&str, u64)> = runs
        .iter()
        .map(|r| (r["stage"].as_str().unwrap(), r["depth"].as_u64().unwrap()))
        .collect();
    assert_eq!(stages, vec![("pairs", 1), ("filter", 2)]);
    assert_eq!(runs[0]["inputs"]["prompts"]["path"], "b.jsonl");
    assert_eq!(runs[0]["inputs"]["seed"]["path"], "a.jsonl");
    assert_eq!(runs[0]["outputs"]["c.jsonl"]["path"], "c.jsonl");
    assert_eq!(runs[1]["params"]["min_len"], 1);
    assert_eq!(runs[1]["params"]["model"], "m0");
    assert_eq!(runs[1]["metrics"]["kept"], 2);
    // the filter's output is the pairs' input, by id
    assert_eq!(
        runs[1]["outputs"]["b.jsonl"]["id"],
        runs[0]["inputs"]["prompts"]["id"]
    );
    let ends = field_of_each(&j["ends"], "path");
    assert_eq!(ends, vec!["a.jsonl"], "a.jsonl is the only root");

    let text = ok(p, &["lineage", "HEAD:c.jsonl"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("c.jsonl [dataset "), "{text}");
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in\n{text}"))
    };
    let indent = |i: usize| lines[i].find(|c: char| c.is_alphanumeric()).unwrap();
    let (pairs, filter, root) = (pos("pairs v1"), pos("filter v1"), pos("src: a.jsonl"));
    assert!(pairs < filter && filter < root, "{text}");
    assert!(
        indent(pairs) < indent(filter) && indent(filter) < indent(root),
        "{text}"
    );
    assert!(lines[root].ends_with("(root)"), "{text}");

    // downstream from the seed: both runs, ending at c.jsonl
    let down = json(p, &["lineage", "HEAD:a.jsonl", "--down", "--json"]);
    let stages = field_of_each(&down["runs"], "stage");
    assert_eq!(stages, vec!["filter", "pairs"]);
    assert_eq!(down["ends"][0]["path"], "c.jsonl");

    let dot = ok(p, &["lineage", "HEAD:c.jsonl", "--format", "dot"]);
    assert!(dot.starts_with("digraph lineage {"), "{dot}");
    assert_eq!(
        dot.matches(" -> ").count(),
        5,
        "3 input edges + 2 output edges:\n{dot}"
    );
    let mermaid = ok(p, &["lineage", "HEAD:c.jsonl", "--format", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert_eq!(mermaid.matches("-->").count(), 5, "{mermaid}");

    // manual runs have no replay function: reproduce refuses them, naming the stage
    let out = srlm(p, &["reproduce", "HEAD:c.jsonl"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("refused: `pairs` is manual provenance (srlm commit --stage)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("refused: `filter` is manual provenance"),
        "{stdout}"
    );

    // a commit without provenance has no upstream runs
    let plain = ok(p, &["lineage", "HEAD~2:a.jsonl"]);
    assert!(plain.contains("no recorded run produced"), "{plain}");
}

#[test]
fn bad_provenance_arguments_are_refused_without_committing() {
    let d = init_store();
    let p = d.path();
    write(p, "a.jsonl", "{\"prompt\":\"x\"}\n");
    ok(p, &["add", "a.jsonl"]);
    let out = srlm(
        p,
        &[
            "commit",
            "-m",
            "x",
            "--stage",
            "s",
            "--input",
            "src=HEAD:nope.jsonl",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("src") && err.contains("nope.jsonl"), "{err}");
    let out = srlm(p, &["commit", "-m", "x", "--param", "k=1"]);
    assert_eq!(out.status.code(), Some(2), "--param needs --stage");
    let out = srlm(
        p,
        &["commit", "-m", "x", "--stage", "s", "--param", "novalue"],
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(commit_count(p), 0);
}

#[test]
fn pre_commit_hook_rejects_bad_pairs_and_accepts_good_ones() {
    let d = init_store();
    let p = d.path();
    assert!(
        p.join(".srlm/hooks/pre-commit").is_file(),
        "init installs the shipped hooks"
    );
    write(p, "ok.jsonl", "{\"prompt\":\"seed\"}\n");
    ok(p, &["add", "ok.jsonl"]);
    ok(p, &["commit", "-m", "seed"]);

    std::fs::create_dir_all(p.join("aift")).unwrap();
    write(
        p,
        "aift/pairs.jsonl",
        "{\"prompt\":\"a\",\"chosen\":\"good\",\"rejected\":\"bad\"}\n{\"prompt\":\"b\",\"chosen\":\"same\",\"rejected\":\"same\"}\n{\"prompt\":\"\",\"chosen\":\"c\",\"rejected\":\"d\"}\n",
    );
    ok(p, &["add", "aift/pairs.jsonl"]);
    let out = srlm(p, &["commit", "-m", "bad pairs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("pre-commit"), "{err}");
    assert!(
        err.contains("aift/pairs.jsonl:2: field `chosen`: is identical to `rejected`"),
        "{err}"
    );
    assert!(
        err.contains("aift/pairs.jsonl:3: field `prompt`: is empty"),
        "{err}"
    );
    assert_eq!(commit_count(p), 1, "nothing committed");

    // the hook checks the staged bytes: fixing the working copy without `add` still fails
    write(
        p,
        "aift/pairs.jsonl",
        "{\"prompt\":\"a\",\"chosen\":\"good\",\"rejected\":\"bad\"}\n",
    );
    assert_eq!(
        srlm(p, &["commit", "-m", "still bad"]).status.code(),
        Some(3)
    );
    ok(p, &["add", "aift/pairs.jsonl"]);
    ok(p, &["commit", "-m", "good pairs"]);
    assert_eq!(commit_count(p), 2);

    // srlm validate directly, and a post-commit hook that sees the commit id
    let out = srlm(p, &["validate", "ok.jsonl", "aift/pairs.jsonl"]);
    assert!(out.status.success());
    let hook = p.join(".srlm/hooks/post-commit");
    std::fs::write(&hook, "#!/bin/sh\nprintf '%s|%s' \"$SRLM_COMMIT\" \"$SRLM_CHANGED_PATHS\" > \"$SRLM_WORKDIR/hook.out\"\n").unwrap();
    write(p, "more.jsonl", "{\"prompt\":\"m\"}\n");
    ok(p, &["add", "more.jsonl"]);
    ok(p, &["commit", "-m", "more"]);
    let seen = std::fs::read_to_string(p.join("hook.out")).unwrap();
    let (commit, changed) = seen.split_once('|').unwrap();
    assert!(head(p).starts_with(&commit[..7]), "{seen} vs {}", head(p));
    assert_eq!(changed, "more.jsonl");
}

/// A run record as srlm wrote it before inputs carried their source: stored with the store
/// API, committed, then read by today's binary.
fn put_old_record(
    store: &srlm_store::Store,
    stage: &str,
    input: (&str, &srlm_store::TreeEntry),
    output: (&str, &srlm_store::TreeEntry),
    time: &str,
) -> srlm_store::RunId {
    let obj = |(path, e): (&str, &srlm_store::TreeEntry)| serde_json::json!({"id": e.id.to_hex(), "kind": "dataset", "path": path});
    let record = serde_json::json!({
        "_type": "srlm.run/v1",
        "stage": {"name": stage, "version": "1"},
        "inputs": {"src": obj(input)},
        "params": {}, "engine": {}, "code": null,
        "env": {"srlm": "0.1.0", "os": "linux", "arch": "x86_64", "cpu": "x", "threads": 1},
        "outputs": {output.0: obj(output)},
        "metrics": {}, "started": time, "finished": time, "status": "ok",
    });
    store
        .put_run(
            &srlm_store::canonical_json(&record),
            &[input.1.id.0],
            &[output.1.id.0],
        )
        .unwrap()
}

#[test]
fn an_old_format_record_still_loads_and_lineage_says_it_matched_by_content() {
    let d = init_store();
    let p = d.path().canonicalize().unwrap();
    let p = p.as_path();
    write(p, "a.jsonl", "{\"prompt\":\"x\"}\n");
    write(p, "b.jsonl", "{\"prompt\":\"y\"}\n");
    write(p, "c.jsonl", "{\"prompt\":\"z\"}\n");
    let mut store = srlm_store::Store::open(p).unwrap();
    let rep = store
        .add(p, &["a.jsonl".into(), "b.jsonl".into(), "c.jsonl".into()])
        .unwrap();
    let e = |name: &str| {
        rep.added
            .iter()
            .find(|f| f.path == name)
            .unwrap()
            .entry
            .clone()
    };
    let (a, b, c) = (e("a.jsonl"), e("b.jsonl"), e("c.jsonl"));
    let r1 = put_old_record(
        &store,
        "filter",
        ("a.jsonl", &a),
        ("b.jsonl", &b),
        "2026-01-01T00:00:00.000Z",
    );
    let r2 = put_old_record(
        &store,
        "pairs",
        ("b.jsonl", &b),
        ("c.jsonl", &c),
        "2026-01-02T00:00:00.000Z",
    );
    for (run, msg) in [(r1, "filter"), (r2, "pairs")] {
        store
            .commit(&srlm_store::CommitOptions {
                message: msg.into(),
                run: Some(run),
                allow_empty: true,
                ..Default::default()
            })
            .unwrap();
    }
    drop(store);
    let j = json(p, &["lineage", "HEAD:c.jsonl", "--json"]);
    let stages = field_of_each(&j["runs"], "stage");
    assert_eq!(stages, vec!["pairs", "filter"], "{j:#}");
    // the start is linked by its commit; the old record's input by content, and JSON says so
    assert_eq!(j["start"][0]["matched"], "source", "{j:#}");
    let input = &j["runs"][0]["inputs"]["src"];
    assert!(input["source"].is_null(), "{input:#}");
    assert_eq!(input["matched"], "content", "{input:#}");
    let text = ok(p, &["lineage", "HEAD:c.jsonl"]);
    assert!(
        text.contains("filter v1") && text.contains("(root)"),
        "{text}"
    );
}
