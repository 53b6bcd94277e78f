//! Provenance, lineage, hooks, `srlm run` and `srlm reproduce`, driven through the binary.
mod common;

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

fn git_commit_all(repo: &git2::Repository, msg: &str) -> git2::Oid {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.org").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
        .unwrap()
}

fn last_record(dir: &Path, path: &str) -> Value {
    let j = json(dir, &["lineage", &format!("HEAD:{path}"), "--json"]);
    j["runs"][0].clone()
}

#[test]
fn dirty_code_is_captured_with_its_patch() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let repo = git2::Repository::init(p).unwrap();
    write(p, "train.py", "print('v1')\n");
    write(p, ".gitignore", "ignored.log\n");
    let sha = git_commit_all(&repo, "code v1");
    ok(p, &["init"]);

    // clean code: dirty is false (the store and its datasets are srlm's, not the code's)
    write(p, "ignored.log", "noise\n");
    write(p, "d1.jsonl", "{\"prompt\":\"x\"}\n");
    ok(p, &["add", "d1.jsonl"]);
    ok(p, &["commit", "-m", "clean", "--stage", "manual"]);
    let code = &last_record(p, "d1.jsonl")["code"];
    assert_eq!(code["commit"], sha.to_string());
    assert_eq!(code["dirty"], false, "{code}");
    assert!(code["patch"].is_null());
    assert!(code["branch"].is_string());

    // edit the code and add an untracked helper: dirty, and the patch holds both
    write(p, "train.py", "print('v2 with a tweak')\n");
    write(p, "helper.py", "SECRET_SAUCE = 42\n");
    write(p, "d2.jsonl", "{\"prompt\":\"y\"}\n");
    ok(p, &["add", "d2.jsonl"]);
    ok(p, &["commit", "-m", "dirty", "--stage", "manual"]);
    let code = last_record(p, "d2.jsonl")["code"].clone();
    assert_eq!(code["dirty"], true, "{code}");
    assert_eq!(code["commit"], sha.to_string());
    let patch_id: srlm_store::ObjectId = code["patch"].as_str().unwrap().parse().unwrap();
    let store = srlm_store::Store::discover(p).unwrap();
    let patch = String::from_utf8(store.get_object(&patch_id).unwrap()).unwrap();
    assert!(
        patch.contains("-print('v1')") && patch.contains("+print('v2 with a tweak')"),
        "{patch}"
    );
    assert!(patch.contains("+SECRET_SAUCE = 42"), "{patch}");
    assert!(
        !patch.contains(".srlm") && !patch.contains("d2.jsonl") && !patch.contains("noise"),
        "{patch}"
    );
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

#[test]
fn run_records_an_external_command_and_reproduce_checks_it() {
    let d = init_store();
    let p = d.path();
    write(p, "data.jsonl", "{\"k\":3}\n{\"k\":1}\n{\"k\":2}\n");
    write(p, "sortit.sh", "sort data.jsonl > sorted.jsonl\n");
    let out = ok(
        p,
        &[
            "run",
            "--stage",
            "sort",
            "--input",
            "data=data.jsonl",
            "--output",
            "sorted.jsonl",
            "--",
            "sh",
            "sortit.sh",
        ],
    );
    assert!(out.contains("committed"), "{out}");
    assert_eq!(
        std::fs::read_to_string(p.join("sorted.jsonl")).unwrap(),
        "{\"k\":1}\n{\"k\":2}\n{\"k\":3}\n"
    );
    assert_eq!(commit_count(p), 1);

    let run = last_record(p, "sorted.jsonl");
    assert_eq!(run["stage"], "sort");
    assert_eq!(
        run["params"]["command"],
        serde_json::json!(["sh", "sortit.sh"])
    );
    assert!(
        run["params"]["files"]["sortit.sh"].is_string(),
        "the script is hashed: {run}"
    );
    assert_eq!(run["inputs"]["data"]["path"], "data.jsonl");
    assert_eq!(run["outputs"]["sorted.jsonl"]["kind"], "dataset");
    assert_eq!(run["metrics"]["exit_code"], 0);

    let out = ok(p, &["reproduce", "HEAD:sorted.jsonl"]);
    assert!(out.contains("all 1 run(s) reproduced identically"), "{out}");
    assert!(out.contains("sorted.jsonl") && out.contains("yes"), "{out}");

    // the script changes behaviour: the reproduction differs, with the rows counted
    write(
        p,
        "sortit.sh",
        "sort data.jsonl | head -n 2 > sorted.jsonl\n",
    );
    let out = srlm(p, &["reproduce", "HEAD:sorted.jsonl"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("NO"), "{stdout}");
    assert!(stdout.contains("1 of 3 recorded rows differ"), "{stdout}");

    // the script is gone: refused with the reason
    std::fs::remove_file(p.join("sortit.sh")).unwrap();
    let out = srlm(p, &["reproduce", "HEAD:sorted.jsonl"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout.contains("refused: sortit.sh, named on the command line, no longer exists"),
        "{stdout}"
    );

    // the pre-commit hook also guards `srlm run`: invalid pairs are not committed (exit 3)
    let out = srlm(
        p,
        &[
            "run",
            "--stage",
            "bad",
            "--output",
            "pairs.jsonl",
            "--",
            "sh",
            "-c",
            "echo '{\"prompt\":\"p\",\"chosen\":\"x\",\"rejected\":\"x\"}' > pairs.jsonl",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("pairs.jsonl:1: field `chosen`: is identical"),
        "{err}"
    );
    assert_eq!(commit_count(p), 1);

    // a failing command is recorded as failed and commits nothing
    let out = srlm(
        p,
        &[
            "run",
            "--stage",
            "boom",
            "--output",
            "never.jsonl",
            "--",
            "sh",
            "-c",
            "exit 7",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit status 7"));
    assert_eq!(commit_count(p), 1);
}

#[test]
fn run_chain_reproduces_upstream_runs_and_last_n() {
    let d = init_store();
    let p = d.path();
    write(p, "raw.jsonl", "{\"k\":2}\n{\"k\":1}\n{\"k\":2}\n");
    ok(
        p,
        &[
            "run",
            "--stage",
            "sort",
            "--input",
            "raw=raw.jsonl",
            "--output",
            "sorted.jsonl",
            "--",
            "sh",
            "-c",
            "sort raw.jsonl > sorted.jsonl",
        ],
    );
    ok(
        p,
        &[
            "run",
            "--stage",
            "uniq",
            "--input",
            "sorted=HEAD:sorted.jsonl",
            "--output",
            "uniq.jsonl",
            "--",
            "sh",
            "-c",
            "uniq sorted.jsonl > uniq.jsonl",
        ],
    );
    let j = json(p, &["lineage", "HEAD:uniq.jsonl", "--json"]);
    let stages = field_of_each(&j["runs"], "stage");
    assert_eq!(stages, vec!["uniq", "sort"]);
    let out = ok(p, &["reproduce", "HEAD:uniq.jsonl"]);
    assert!(out.contains("all 2 run(s) reproduced identically"), "{out}");
    let out = ok(
        p,
        &["reproduce", "HEAD:uniq.jsonl", "--last", "1", "--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["stage"], "uniq");
    assert_eq!(v[0]["outputs"][0]["identical"], true);
}

fn write_checkpoint(path: &Path, w: [f32; 3]) {
    use safetensors::tensor::TensorView;
    let wb: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let bb: Vec<u8> = [0.5f32, -0.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let tensors = vec![
        (
            "layer.weight",
            TensorView::new(safetensors::Dtype::F32, vec![3], &wb).unwrap(),
        ),
        (
            "layer.bias",
            TensorView::new(safetensors::Dtype::F32, vec![2], &bb).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(tensors, None, path).unwrap();
}

#[test]
fn reproduce_names_the_tensors_that_differ() {
    let d = init_store();
    let p = d.path();
    // the "trainer" copies a checkpoint from outside the store, named by a recorded variable
    let outside = tempfile::tempdir().unwrap();
    let src = outside.path().join("trained.safetensors");
    write_checkpoint(&src, [1.0, 2.0, 3.0]);
    let out = common::srlm()
        .current_dir(p)
        .env("TRAINED", &src)
        .args([
            "run",
            "--stage",
            "train",
            "--env",
            "TRAINED",
            "--output",
            "model.safetensors",
            "--",
            "sh",
            "-c",
            "cp \"$TRAINED\" model.safetensors",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = last_record(p, "model.safetensors");
    assert_eq!(run["outputs"]["model.safetensors"]["kind"], "checkpoint");
    assert_eq!(
        run["params"]["env"]["TRAINED"],
        src.to_string_lossy().as_ref()
    );
    assert!(
        ok(p, &["reproduce", "model.safetensors"]).contains("all 1 run(s) reproduced identically")
    );

    write_checkpoint(&src, [1.0, 2.25, 3.0]);
    let out = srlm(p, &["reproduce", "model.safetensors"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("1 tensor(s) differ: layer.weight: 1/3 values, max abs diff 2.500e-1"),
        "{stdout}"
    );
}

#[test]
fn no_commit_run_is_attached_by_the_next_commit() {
    let d = init_store();
    let p = d.path();
    write(p, "in.jsonl", "{\"k\":1}\n");
    let out = ok(
        p,
        &[
            "run",
            "--stage",
            "copy",
            "--input",
            "src=in.jsonl",
            "--output",
            "out.jsonl",
            "--no-commit",
            "--",
            "cp",
            "in.jsonl",
            "out.jsonl",
        ],
    );
    assert!(out.contains("staged"), "{out}");
    assert_eq!(commit_count(p), 0);
    let v: Value = serde_json::from_str(&ok(p, &["commit", "-m", "copied", "--json"])).unwrap();
    let run = v["run"].as_str().expect("the pending run is attached");
    let rec = last_record(p, "out.jsonl");
    assert_eq!(rec["id"], run);
    assert_eq!(rec["stage"], "copy");
    // attached once: the next commit has no run
    write(p, "more.jsonl", "{\"k\":2}\n");
    ok(p, &["add", "more.jsonl"]);
    let v: Value = serde_json::from_str(&ok(p, &["commit", "-m", "more", "--json"])).unwrap();
    assert!(v["run"].is_null(), "{v}");
}

#[test]
fn reproduce_replays_srlm_own_stages_through_the_registry() {
    // seed import and SFT on the tiny random-weight llama, then replay both from their records
    let d = init_store();
    let p = d.path();
    srlm::engine::fixture::write_tiny_model(&p.join("base/tiny"), 11).expect("tiny model");
    ok(p, &["add", "base/tiny"]);
    ok(p, &["commit", "-m", "M0"]);
    ok(p, &["import", "builtin"]);
    ok(
        p,
        &[
            "sft",
            "--base",
            "HEAD:base/tiny",
            "--ift",
            "seed/ift.jsonl",
            "--eft",
            "seed/eft.jsonl",
            "--max-tokens",
            "32",
            "--grad-accum",
            "8",
            "--lr",
            "1e-3",
            "--tag",
            "M1",
        ],
    );
    let out = srlm(p, &["reproduce", "M1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sft") && stdout.contains("seed"),
        "{stdout}"
    );
    assert!(stdout.contains("reproduced identically"), "{stdout}");
    // the training run records what it ran on (it was `{}`)
    let store = srlm_store::Store::discover(p).unwrap();
    let head = store.head().unwrap().commit().unwrap();
    let run = store.read_commit(&head).unwrap().run.unwrap();
    let sft = srlm::provenance::RunRecord::load(&store, run).unwrap();
    assert_eq!(sft.stage.name, "sft");
    let engine = &sft.engine;
    assert_eq!(engine["backend"], "in-process", "{engine}");
    assert_eq!(engine["dtype"], "f32", "{engine}");
    assert_eq!(engine["weights"], "safetensors folder (f32)", "{engine}");
    assert!(engine["threads"].as_u64().unwrap() >= 1, "{engine}");
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
