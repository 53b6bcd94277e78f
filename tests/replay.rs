//! `srlm reproduce` from the recorded code (a checkout of the run's git commit with its patch),
//! and inputs outside the working directory (recorded by path and id, checked before use),
//! driven through the binary.
mod common;

use std::path::Path;

use common::{fails, ok, run};
use serde_json::Value;

fn write(dir: &Path, rel: &str, text: &str) {
    if let Some(p) = dir.join(rel).parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(dir.join(rel), text).unwrap();
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

/// Ids and hashes (12 or more hex digits) as `#` of the same length, so tables keep their
/// layout; the srlm version as `X.Y.Z`.
fn redact(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 12 {
            out.push_str(&"#".repeat(run.len()));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out.replace(env!("CARGO_PKG_VERSION"), "X.Y.Z")
}

fn sort_run(p: &Path) -> String {
    ok(
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
    )
}

#[test]
fn reproduce_replays_the_recorded_commit_and_names_a_changed_script() {
    let d = tempfile::tempdir().unwrap();
    let p = &d.path().canonicalize().unwrap();
    let repo = git2::Repository::init(p).unwrap();
    repo.remote("origin", "https://alice:s3cret@example.org/team/loop.git")
        .unwrap();
    write(p, ".gitignore", ".srlm\n*.jsonl\n");
    write(p, "sortit.sh", "sort data.jsonl > sorted.jsonl\n");
    let sha = git_commit_all(&repo, "v1");
    ok(p, &["init"]);
    write(p, "data.jsonl", "{\"k\":3}\n{\"k\":1}\n{\"k\":2}\n");
    sort_run(p);
    let rec: Value =
        serde_json::from_str(&ok(p, &["lineage", "HEAD:sorted.jsonl", "--json"])).unwrap();
    let code = &rec["runs"][0]["code"];
    assert_eq!(code["commit"], sha.to_string(), "{code}");
    assert_eq!(
        code["remote"], "https://example.org/team/loop.git",
        "the remote is recorded without credentials: {code}"
    );

    // the script is edited and committed after the run: the replay still runs the recorded one
    write(p, "sortit.sh", "sort -r data.jsonl > sorted.jsonl\n");
    git_commit_all(&repo, "v2: reversed");
    let index_before = std::fs::read(p.join(".git/index")).unwrap();
    let out = ok(p, &["reproduce", "HEAD:sorted.jsonl"]);
    insta::assert_snapshot!("reproduce_recorded_commit", redact(&out));
    assert!(out.contains("all 1 run(s) reproduced identically"), "{out}");
    assert!(
        out.contains(&format!(
            "replayed with git commit {}",
            &sha.to_string()[..12]
        )),
        "{out}"
    );
    assert!(
        out.contains("script sortit.sh changed since the run; the replay used the recorded"),
        "{out}"
    );
    // the user's repository is untouched, and the replay's scratch is gone
    assert_eq!(std::fs::read(p.join(".git/index")).unwrap(), index_before);
    assert_eq!(
        std::fs::read_to_string(p.join("sortit.sh")).unwrap(),
        "sort -r data.jsonl > sorted.jsonl\n"
    );
    let left: Vec<_> = std::fs::read_dir(p.join(".srlm/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");

    // a run from a dirty tree: the recorded patch is applied on the commit
    write(
        p,
        "sortit.sh",
        "sort data.jsonl | head -n 2 > sorted.jsonl\n",
    );
    write(p, "helper.txt", "untracked, in the patch\n");
    sort_run(p);
    write(p, "sortit.sh", "echo gone > sorted.jsonl\n");
    let out = ok(p, &["reproduce", "HEAD:sorted.jsonl", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let last = v.as_array().unwrap().last().unwrap();
    assert_eq!(last["outputs"][0]["identical"], true, "{last}");
    assert!(
        last["code"]
            .as_str()
            .unwrap()
            .ends_with("+ the recorded patch"),
        "{last}"
    );
    assert_eq!(last["scripts"][0]["changed_since_run"], true, "{last}");
}

#[test]
fn reproduce_says_when_the_recording_srlm_was_another_version() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(p, &["init"]);
    write(p, "data.jsonl", "{\"k\":2}\n{\"k\":1}\n");
    write(p, "sortit.sh", "sort data.jsonl > sorted.jsonl\n");
    sort_run(p);
    {
        // the same run as an older srlm would have recorded it
        let mut store = srlm_store::Store::discover(p).unwrap();
        let head = store.head().unwrap().commit().unwrap();
        let run = store.read_commit(&head).unwrap().run.unwrap();
        let mut rec = srlm::provenance::RunRecord::load(&store, run).unwrap();
        rec.env.srlm = "0.0.1".into();
        let old = rec.store(&store).unwrap();
        store
            .commit(&srlm_store::CommitOptions {
                message: "old record".into(),
                run: Some(old),
                allow_empty: true,
                ..Default::default()
            })
            .unwrap();
    }
    let out = ok(p, &["reproduce", "HEAD:sorted.jsonl", "--last", "2"]);
    let row = out
        .lines()
        .find(|l| l.contains("srlm version"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("0.0.1") && row.contains(env!("CARGO_PKG_VERSION")) && row.contains("differs"),
        "{out}"
    );
    assert_eq!(
        out.matches("srlm version").count(),
        1,
        "only the old record: {out}"
    );
    // without a git repository, today's script is used, and a change to it is named
    write(p, "sortit.sh", "sort -r data.jsonl > sorted.jsonl\n");
    let o = run(p, &["reproduce", "HEAD:sorted.jsonl", "--last", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("replayed with today's files"), "{out}");
    assert!(
        out.contains("script sortit.sh changed since the run; and the replay could not use"),
        "{out}"
    );
}

fn external_run(p: &Path, model: &Path, extra: &[&str]) -> std::process::Output {
    let input = format!("model={}", model.display());
    let mut args = vec![
        "run", "--stage", "copy", "--input", &input, "--output", "out.bin",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--",
        "sh",
        "-c",
        "tr a-z A-Z < \"$SRLM_INPUT_MODEL\" > out.bin",
    ]);
    run(p, &args)
}

#[test]
fn an_external_input_is_recorded_by_path_and_id_and_checked_before_use() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().canonicalize().unwrap();
    let p = &root.join("work");
    std::fs::create_dir_all(p).unwrap();
    ok(p, &["init"]);
    let model = root.join("models/m.gguf");
    write(&root, "models/m.gguf", &"weights ".repeat(40_000));
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&model)
        .unwrap()
        .set_modified(old)
        .unwrap();

    let first = external_run(p, &model, &[]);
    assert!(first.status.success(), "{first:?}");
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(
        err.contains(&format!("hashing {}", model.display())),
        "{err}"
    );
    // recorded by absolute path and id, not copied into the store
    let l: Value = serde_json::from_str(&ok(p, &["lineage", "HEAD:out.bin", "--json"])).unwrap();
    let input = &l["runs"][0]["inputs"]["model"];
    assert_eq!(input["path"], model.display().to_string(), "{l}");
    let id: srlm_store::ObjectId = input["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(l["external_inputs"][0]["unchanged"], true, "{l}");
    {
        let store = srlm_store::Store::discover(p).unwrap();
        assert!(!store.has_object(&id).unwrap(), "not copied");
        let tree = store
            .commit_tree(&store.head().unwrap().commit().unwrap())
            .unwrap();
        assert!(
            !tree.entries.keys().any(|k| k.contains("m.gguf")),
            "not committed"
        );
    }
    // unchanged: a stat, not hashed again
    let second = external_run(p, &model, &[]);
    assert!(second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!err.contains("hashing"), "re-hashed: {err}");

    let out = ok(p, &["reproduce", "HEAD:out.bin", "--last", "1"]);
    assert!(out.contains("reproduced identically"), "{out}");
    assert!(
        out.contains(&format!(
            "external input model {}: unchanged",
            model.display()
        )),
        "{out}"
    );

    // changed: reproduce and lineage say so, and the run is not replayed on other bytes
    write(&root, "models/m.gguf", &"WEIGHTS ".repeat(40_000));
    let o = run(p, &["reproduce", "HEAD:out.bin", "--last", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains(&format!(
            "refused: input model ({}, outside the working directory) has changed since the run",
            model.display()
        )),
        "{out}"
    );
    let text = ok(p, &["lineage", "HEAD:out.bin"]);
    assert!(text.contains("changed since the run (now "), "{text}");

    // gone
    std::fs::remove_file(&model).unwrap();
    let o = run(p, &["reproduce", "HEAD:out.bin", "--last", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("has gone (no such file)"), "{out}");
    assert!(ok(p, &["lineage", "HEAD:out.bin"]).contains(": gone (no such file)"));

    // --store-input keeps a copy: a changed file is replayed from it
    write(&root, "models/m.gguf", &"v3 ".repeat(10_000));
    let o = external_run(p, &model, &["--store-input"]);
    assert!(o.status.success(), "{o:?}");
    write(&root, "models/m.gguf", "v4, changed again\n");
    let out = ok(p, &["reproduce", "HEAD:out.bin", "--last", "1"]);
    assert!(out.contains("reproduced identically"), "{out}");
    assert!(
        out.contains("replayed from the copy stored with the run"),
        "{out}"
    );
    // an output may never be outside the working directory
    let bad = format!("{}/x.bin", root.display());
    let err = fails(
        p,
        &["run", "--stage", "x", "--output", &bad, "--", "true"],
        1,
    );
    assert!(
        err.contains("outside the store's working directory"),
        "{err}"
    );
}
