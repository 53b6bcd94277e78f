//! `srlm run` (an external command's run record, its code and patch) and `srlm reproduce`
//! (replaying a recorded run and comparing outputs), driven through the binary.
use super::*;

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
