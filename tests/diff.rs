//! `srlm diff` driven through the real binary: row-level diffs of the real AIFT(M1) pairs against
//! a derived version with known changes (from files and from commits), the JSON schema
//! (snapshot), the trend table, malformed input, duplicate keys and binary files.
mod common;

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

const PAIRS: &str = "aift/mistral7b_m1_pairs.jsonl";

fn run(dir: &Path, args: &[&str]) -> Output {
    common::srlm()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("srlm runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "srlm {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_of(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).expect("--json prints one JSON document")
}

fn lines_of(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_rows(path: &Path, rows: &[Value]) {
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r).unwrap());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// The known changes: every 10th row removed, the row after it gets its `chosen` edited, and
/// `added` new prompts appended.
struct Derived {
    rows: Vec<Value>,
    removed: u64,
    modified: u64,
    added: u64,
}

fn derive(base: &[Value], added: usize, tag: &str) -> Derived {
    let mut rows = Vec::new();
    let (mut removed, mut modified) = (0, 0);
    for (i, r) in base.iter().enumerate() {
        match i % 10 {
            0 => removed += 1,
            1 => {
                let mut r = r.clone();
                let chosen = r["chosen"].as_str().unwrap().to_owned();
                r["chosen"] = json!(format!("{chosen} (edited {tag})"));
                rows.push(r);
                modified += 1;
            }
            _ => rows.push(r.clone()),
        }
    }
    for i in 0..added {
        rows.push(json!({
            "prompt": format!("New prompt {tag} #{i}: explain self-rewarding training."),
            "chosen": "A long, careful answer that explains the loop step by step.",
            "rejected": "No.",
        }));
    }
    Derived {
        rows,
        removed,
        modified,
        added: added as u64,
    }
}

fn summary(doc: &Value, i: usize) -> (u64, u64, u64, u64) {
    let s = &doc["datasets"][i]["summary"];
    let n = |k: &str| s[k].as_u64().unwrap();
    (n("added"), n("removed"), n("modified"), n("unchanged"))
}

#[test]
fn real_pairs_from_files_give_exactly_the_known_counts() {
    let Some(src) = common::shared_data(PAIRS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = lines_of(&std::fs::read_to_string(&src).unwrap());
    assert_eq!(base.len(), 583);
    let d = derive(&base, 25, "v2");
    std::fs::copy(&src, dir.path().join("a.jsonl")).unwrap();
    write_rows(&dir.path().join("b.jsonl"), &d.rows);

    let doc = json_of(
        dir.path(),
        &["diff", "--files", "a.jsonl", "b.jsonl", "--json"],
    );
    let unchanged = base.len() as u64 - d.removed - d.modified;
    assert_eq!(
        summary(&doc, 0),
        (d.added, d.removed, d.modified, unchanged)
    );
    let ds = &doc["datasets"][0];
    assert_eq!(ds["key"], "prompt");
    assert_eq!(ds["a"]["kind"], "aift");
    assert_eq!(ds["field_changes"], json!({"chosen": d.modified}));
    assert_eq!(ds["a"]["stats"]["rows"], 583);
    assert_eq!(ds["b"]["stats"]["rows"], json!(d.rows.len()));
    // The real file has one pair whose chosen equals its rejected.
    let same = base.iter().filter(|r| r["chosen"] == r["rejected"]).count() as f64 / 583.0;
    assert_eq!(
        ds["a"]["stats"]["chosen_equals_rejected_share"]
            .as_f64()
            .unwrap(),
        same
    );
    // Mean chosen length on side a, computed here independently (characters, not bytes).
    let mean = base
        .iter()
        .map(|r| r["chosen"].as_str().unwrap().chars().count())
        .sum::<usize>() as f64
        / 583.0;
    let got = ds["a"]["stats"]["lengths"][1]["mean"].as_f64().unwrap();
    assert!((got - mean).abs() < 1e-9, "{got} vs {mean}");
    // The first modified row: line 2 of a, line 1 of b (b lost a's line 1).
    let m = &ds["examples"]["modified"][0];
    assert_eq!(
        (m["line_a"].as_u64(), m["line_b"].as_u64()),
        (Some(2), Some(1))
    );
    let words = m["changes"][0]["words"].as_array().unwrap();
    assert!(words
        .iter()
        .any(|w| w["op"] == "insert" && w["text"].as_str().unwrap().contains("edited")));
    assert_eq!(ds["examples"]["added"].as_array().unwrap().len(), 3);
}

#[test]
fn text_output_fits_80_columns_and_highlights_words() {
    let Some(src) = common::shared_data(PAIRS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = lines_of(&std::fs::read_to_string(&src).unwrap());
    let d = derive(&base, 4, "v2");
    std::fs::copy(&src, dir.path().join("a.jsonl")).unwrap();
    write_rows(&dir.path().join("b.jsonl"), &d.rows);
    let text = ok(
        dir.path(),
        &["diff", "--files", "a.jsonl", "b.jsonl", "--limit", "2"],
    );
    for line in text.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    assert!(
        text.contains("+4 added  -59 removed  ~59 modified  =465 unchanged"),
        "{text}"
    );
    assert!(text.contains("{+ (edited"), "{text}");
    assert!(text.contains("chosen length mean / median"));
    let stat = ok(
        dir.path(),
        &["diff", "--files", "a.jsonl", "b.jsonl", "--stat"],
    );
    assert!(stat.contains("=465 unchanged"));
    assert!(!stat.contains("{+"), "--stat shows no examples");
}

/// The shape of a JSON document: object keys with the shapes of their values, arrays as the
/// shape of their first element, scalars as their type.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

fn small_pair(dir: &Path) {
    write_rows(
        &dir.join("a.jsonl"),
        &[
            json!({"prompt": "p1", "chosen": "the cat sat", "rejected": "no", "score_chosen": 5, "score_rejected": 2}),
            json!({"prompt": "p2", "chosen": "same", "rejected": "same", "score_chosen": 3, "score_rejected": 3}),
            json!({"prompt": "p3", "chosen": "gone", "rejected": "x", "score_chosen": 4, "score_rejected": 1}),
        ],
    );
    write_rows(
        &dir.join("b.jsonl"),
        &[
            json!({"prompt": "p1", "chosen": "the dog sat", "rejected": "no", "score_chosen": 5, "score_rejected": "?"}),
            json!({"prompt": "p2", "chosen": "same", "rejected": "same", "score_chosen": 3, "score_rejected": 3}),
            json!({"prompt": "p4", "chosen": "new", "rejected": "y", "score_chosen": 4.33, "score_rejected": 2, "source": "m2"}),
        ],
    );
}

#[test]
fn json_document_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    small_pair(dir.path());
    let doc = json_of(
        dir.path(),
        &["diff", "--files", "a.jsonl", "b.jsonl", "--json"],
    );
    insta::assert_json_snapshot!("diff_json_small", doc);
    insta::assert_json_snapshot!("diff_json_shape", shape(&doc));
    assert_eq!(summary(&doc, 0), (1, 1, 1, 1));
    let ds = &doc["datasets"][0];
    assert_eq!(
        ds["schema_changes"],
        json!([{"field": "score_rejected", "change": "type_changed", "a_types": ["number"], "b_types": ["number", "string"]}, {"field": "source", "change": "added", "a_types": [], "b_types": ["string"]}])
    );
    assert_eq!(
        ds["b"]["stats"]["unparsed_score_share"].as_f64(),
        Some(1.0 / 3.0)
    );
    assert_eq!(ds["a"]["stats"]["tie_share"].as_f64(), Some(1.0 / 3.0));
    assert_eq!(
        ds["b"]["stats"]["scores"][0]["histogram"],
        json!({"4": 1, "5": 1, "3": 1})
    );
}

#[test]
fn malformed_lines_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}\n";
    std::fs::write(dir.path().join("a.jsonl"), good).unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "json",
            format!("{good}{good}{{\"prompt\": \"q\",\n").into_bytes(),
            "b.jsonl:3: not JSON",
        ),
        (
            "utf8",
            [good.as_bytes(), b"{\"prompt\": \"\xff\"}\n"].concat(),
            "b.jsonl:2: not valid UTF-8",
        ),
        (
            "key",
            format!("{good}\n{{\"chosen\": \"c\", \"rejected\": \"r\"}}\n").into_bytes(),
            "b.jsonl:3: field `prompt` is missing",
        ),
        (
            "object",
            format!("{good}[1, 2]\n").into_bytes(),
            "b.jsonl:2: not a JSON object",
        ),
    ];
    for (name, bytes, want) in cases {
        std::fs::write(dir.path().join("b.jsonl"), bytes).unwrap();
        let out = run(dir.path(), &["diff", "--files", "a.jsonl", "b.jsonl"]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{name}: {err}");
    }
}

#[test]
fn keep_going_reports_the_bad_dataset_and_diffs_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    write_rows(
        &a.join("good.jsonl"),
        &[json!({"prompt": "p", "chosen": "c", "rejected": "r"})],
    );
    write_rows(
        &b.join("good.jsonl"),
        &[json!({"prompt": "p", "chosen": "c2", "rejected": "r"})],
    );
    write_rows(
        &a.join("bad.jsonl"),
        &[json!({"prompt": "p", "chosen": "c", "rejected": "r"})],
    );
    std::fs::write(
        b.join("bad.jsonl"),
        "{\"prompt\": \"p\", \"chosen\": 1, \"rejected\": 2}\nnot json\n",
    )
    .unwrap();

    let out = run(dir.path(), &["diff", "--files", "A", "B"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.jsonl:2: not JSON"));

    let out = run(
        dir.path(),
        &["diff", "--files", "A", "B", "--keep-going", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "errors still fail the command");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["datasets"].as_array().unwrap().len(), 1);
    assert_eq!(doc["datasets"][0]["path"], "good.jsonl");
    assert_eq!(summary(&doc, 0), (0, 0, 1, 0));
    let e = &doc["errors"][0];
    assert_eq!(
        (e["path"].as_str(), e["line"].as_u64()),
        (Some("bad.jsonl"), Some(2))
    );
}

#[test]
fn duplicate_keys_are_reported_and_key_can_be_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let row =
        |id: u64, p: &str, c: &str| json!({"id": id, "prompt": p, "chosen": c, "rejected": "r"});
    write_rows(
        &dir.path().join("a.jsonl"),
        &[row(1, "p", "c1"), row(2, "q", "c2")],
    );
    write_rows(
        &dir.path().join("b.jsonl"),
        &[row(1, "p", "c1"), row(2, "p", "c2"), row(3, "p", "c3")],
    );
    let doc = json_of(
        dir.path(),
        &["diff", "--files", "a.jsonl", "b.jsonl", "--json"],
    );
    let ds = &doc["datasets"][0];
    assert_eq!(
        (
            ds["a"]["duplicate_keys"].as_u64(),
            ds["b"]["duplicate_keys"].as_u64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(ds["b"]["duplicate_rows"], 2);
    // By prompt: q removed, two extra p rows added.
    assert_eq!(summary(&doc, 0), (2, 1, 0, 1));
    // By id: row 2 modified (its prompt changed), row 3 added.
    let doc = json_of(
        dir.path(),
        &[
            "diff", "--files", "a.jsonl", "b.jsonl", "--json", "--key", "id",
        ],
    );
    assert_eq!(summary(&doc, 0), (1, 0, 1, 1));
    assert_eq!(doc["datasets"][0]["field_changes"], json!({"prompt": 1}));
    let text = ok(dir.path(), &["diff", "--files", "a.jsonl", "b.jsonl"]);
    assert!(
        text.contains("duplicate keys: a 0 (0 extra rows), b 1 (2 extra rows)"),
        "{text}"
    );
}

#[test]
fn binary_files_get_a_size_and_id_diff() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("A"), dir.path().join("B"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("model.bin"), [0u8, 1, 2, 3]).unwrap();
    std::fs::write(b.join("model.bin"), [0u8, 1, 2, 3, 4]).unwrap();
    // A binary file with a dataset's name is still not parsed.
    std::fs::write(a.join("weird.jsonl"), b"{\"a\":1}\n").unwrap();
    std::fs::write(b.join("weird.jsonl"), b"\x00\x01binary").unwrap();
    std::fs::write(a.join("same.txt"), "x").unwrap();
    std::fs::write(b.join("same.txt"), "x").unwrap();
    let doc = json_of(dir.path(), &["diff", "--files", "A", "B", "--json"]);
    let changes = doc["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["path"], "model.bin");
    assert_eq!(changes[0]["kind"], "binary");
    assert_eq!(
        (
            changes[0]["a"]["size"].as_u64(),
            changes[0]["b"]["size"].as_u64()
        ),
        (Some(4), Some(5))
    );
    assert_eq!(
        changes[0]["b"]["id"],
        blake3::hash(&[0u8, 1, 2, 3, 4]).to_hex().as_str()
    );
    assert_eq!(changes[1]["kind"], "binary");
    assert_eq!(doc["unchanged_paths"], 1);
    assert!(doc["datasets"].as_array().unwrap().is_empty());
    let text = ok(dir.path(), &["diff", "--files", "A", "B"]);
    assert!(text.contains("model.bin"));
}

/// The store in `dir`, created if needed. `Store::init` reopens its sled index right after closing it, and
/// sled's file lock is sometimes still held then ("could not acquire lock ... WouldBlock", seen
/// about one run in ten under load): a store bug, reported; retry so these diff tests test diffs.
fn store_in(dir: &Path) -> srlm_store::Store {
    let mut last = None;
    for _ in 0..5 {
        if dir.join(".srlm/FORMAT").exists() {
            match srlm_store::Store::open(dir) {
                Ok(s) => return s,
                Err(e) => last = Some(e),
            }
        } else {
            match srlm_store::Store::init(dir) {
                Ok(s) => return s,
                Err(e) => last = Some(e),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("cannot create a store: {last:?}")
}

/// Commit each version of `aift.jsonl` in a fresh store (through the store library, so the test
/// does not depend on the other verbs) and tag them M1, M2, ….
fn commit_versions(dir: &Path, versions: &[&[Value]]) {
    let mut store = store_in(dir);
    for (i, rows) in versions.iter().enumerate() {
        write_rows(&dir.join("aift.jsonl"), rows);
        store
            .add(dir, &[std::path::PathBuf::from("aift.jsonl")])
            .unwrap();
        let id = store
            .commit(&srlm_store::CommitOptions {
                message: format!("AIFT(M{})", i + 1),
                ..Default::default()
            })
            .unwrap();
        store.set_tag(&format!("M{}", i + 1), &id, false).unwrap();
    }
}

#[test]
fn real_pairs_from_two_commits_give_exactly_the_known_counts() {
    let Some(src) = common::shared_data(PAIRS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = lines_of(&std::fs::read_to_string(&src).unwrap());
    let d = derive(&base, 25, "v2");
    commit_versions(dir.path(), &[&base, &d.rows]);
    let unchanged = base.len() as u64 - d.removed - d.modified;
    let want = (d.added, d.removed, d.modified, unchanged);

    // Cold (no record cache), then warm (from the cache): the same answer.
    for round in ["cold", "warm"] {
        let doc = json_of(dir.path(), &["diff", "M1", "M2", "--json"]);
        assert_eq!(summary(&doc, 0), want, "{round}");
        assert_eq!(doc["changes"][0]["path"], "aift.jsonl");
        assert_eq!(doc["changes"][0]["kind"], "dataset");
        assert_eq!(doc["changes"][0]["b"]["rows"], json!(d.rows.len()));
        let ds = &doc["datasets"][0];
        assert_eq!(ds["field_changes"], json!({"chosen": d.modified}));
        assert_eq!(ds["a"]["label"], "M1:aift.jsonl");
        assert_eq!(ds["b"]["stats"]["rows"], json!(d.rows.len()));
        let m = &ds["examples"]["modified"][0];
        assert_eq!(
            (m["line_a"].as_u64(), m["line_b"].as_u64()),
            (Some(2), Some(1))
        );
    }
    let cache = dir.path().join(".srlm/cache/diff");
    let recs = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "rec")
        .count();
    assert_eq!(recs, 2, "one record file per manifest");

    // The statistics equal those of the file diff of the same two versions.
    std::fs::copy(&src, dir.path().join("a.jsonl")).unwrap();
    write_rows(&dir.path().join("b.jsonl"), &d.rows);
    let files = json_of(
        dir.path(),
        &["diff", "--files", "a.jsonl", "b.jsonl", "--json"],
    );
    let commits = json_of(dir.path(), &["diff", "M1", "M2", "aift.jsonl", "--json"]);
    assert_eq!(
        files["datasets"][0]["a"]["stats"],
        commits["datasets"][0]["a"]["stats"]
    );
    assert_eq!(
        files["datasets"][0]["b"]["stats"],
        commits["datasets"][0]["b"]["stats"]
    );

    // --stat reads no rows beyond the records and still counts; paths filter.
    let stat = ok(dir.path(), &["diff", "M1", "M2", "--stat"]);
    assert!(
        stat.contains(&format!(
            "+{} added  -{} removed  ~{} modified  ={unchanged} unchanged",
            d.added, d.removed, d.modified
        )),
        "{stat}"
    );
    let none = json_of(dir.path(), &["diff", "M1", "M2", "other.jsonl", "--json"]);
    assert!(none["changes"].as_array().unwrap().is_empty());
    // A damaged cache file is rebuilt, not trusted.
    for e in std::fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len() / 2;
        bytes[n] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    }
    assert_eq!(
        summary(&json_of(dir.path(), &["diff", "M1", "M2", "--json"]), 0),
        want
    );
}

/// The trend document's revisions, checked against the three versions it was made from.
fn check_trend(doc: &Value, versions: [&[Value]; 3], added: [u64; 2]) {
    assert_eq!(doc["schema"], "srlm.trend/v1");
    let revs = doc["revisions"].as_array().unwrap();
    let rows: Vec<u64> = revs.iter().map(|r| r["rows"].as_u64().unwrap()).collect();
    assert_eq!(rows, versions.map(|v| v.len() as u64));
    assert_eq!(revs[0]["overlap_prev"], Value::Null);
    // Every row but the added ones has its prompt in the previous version.
    for i in 1..3 {
        assert_eq!(
            revs[i]["overlap_prev"].as_u64(),
            Some(rows[i] - added[i - 1])
        );
    }
    let mean = |rows: &[Value]| {
        rows.iter()
            .map(|r| r["chosen"].as_str().unwrap().chars().count())
            .sum::<usize>() as f64
            / rows.len() as f64
    };
    for (r, v) in revs.iter().zip(versions) {
        assert!((r["chosen_len_mean"].as_f64().unwrap() - mean(v)).abs() < 1e-9);
    }
}

#[test]
fn trend_over_three_files_and_three_commits() {
    let Some(src) = common::shared_data(PAIRS) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let base = lines_of(&std::fs::read_to_string(&src).unwrap());
    let m2 = derive(&base, 10, "m2");
    let m3 = derive(&m2.rows, 20, "m3");
    let versions: [&[Value]; 3] = [&base, &m2.rows, &m3.rows];
    for (name, rows) in ["m1.jsonl", "m2.jsonl", "m3.jsonl"].iter().zip(versions) {
        write_rows(&dir.path().join(name), rows);
    }
    let files = ["diff", "--files", "m1.jsonl", "m2.jsonl", "m3.jsonl"];
    check_trend(
        &json_of(dir.path(), &[&files[..], &["--json"]].concat()),
        versions,
        [10, 20],
    );

    commit_versions(dir.path(), &versions);
    let revs = ["diff", "M1", "M2", "M3", "--path", "aift.jsonl"];
    check_trend(
        &json_of(dir.path(), &[&revs[..], &["--json"]].concat()),
        versions,
        [10, 20],
    );

    for args in [&files[..], &revs[..]] {
        let text = ok(dir.path(), args);
        let last = if args[1] == "--files" {
            "m3.jsonl"
        } else {
            "M3"
        };
        assert!(
            text.lines()
                .any(|l| l.contains(last) && l.contains(&m3.rows.len().to_string())),
            "{text}"
        );
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
    }
}

#[test]
fn committed_bad_rows_name_revision_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = json!({"prompt": "p", "chosen": "c", "rejected": "r"});
    let mut store = store_in(dir.path());
    for (i, extra) in ["", "{\"chosen\": \"c\", \"rejected\": \"r\"}\n"]
        .iter()
        .enumerate()
    {
        std::fs::write(dir.path().join("aift.jsonl"), format!("{good}\n{extra}")).unwrap();
        std::fs::write(
            dir.path().join("ok.jsonl"),
            format!("{{\"prompt\": \"{i}\"}}\n"),
        )
        .unwrap();
        store.add(dir.path(), &[".".into()]).unwrap();
        let id = store
            .commit(&srlm_store::CommitOptions {
                message: "x".into(),
                ..Default::default()
            })
            .unwrap();
        store.set_tag(&format!("M{}", i + 1), &id, false).unwrap();
    }
    drop(store);
    let out = run(dir.path(), &["diff", "M1", "M2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("M2:aift.jsonl:2: field `prompt` is missing"),
        "{err}"
    );
    let out = run(dir.path(), &["diff", "M1", "M2", "--keep-going", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["errors"][0]["field"], "prompt");
    assert_eq!(doc["datasets"][0]["path"], "ok.jsonl");
    assert_eq!(summary(&doc, 0), (1, 1, 0, 0));
}

#[test]
fn warm_cache_after_commit_makes_the_next_diff_read_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = (0..50)
        .map(|i| json!({"prompt": format!("p{i}"), "chosen": "c", "rejected": "r"}))
        .collect();
    let mut changed = rows.clone();
    changed[3]["chosen"] = json!("c, better");
    commit_versions(dir.path(), &[&rows, &changed]);
    {
        let store = store_in(dir.path());
        let tree = |rev: &str| store.commit_tree(&store.resolve(rev).unwrap()).unwrap();
        let built =
            srlm::dataset::committed::warm_cache(&store, &tree("M2"), Some(&tree("M1"))).unwrap();
        assert_eq!(built, 1);
    }
    // Remove every row pack: a diff --stat that needs no row still works from the cache alone.
    for e in std::fs::read_dir(dir.path().join(".srlm/packs")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let doc = json_of(dir.path(), &["diff", "M1", "M2", "--stat", "--json"]);
    assert_eq!(summary(&doc, 0), (0, 0, 1, 49));
}

#[test]
fn usage_errors_exit_2_and_missing_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(dir.path(), &["diff", "M1"]).status.code(), Some(2));
    assert_eq!(
        run(dir.path(), &["diff", "--files", "a.jsonl"])
            .status
            .code(),
        Some(2)
    );
    let out = run(dir.path(), &["diff", "--files", "nope.jsonl", "b.jsonl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.jsonl") && err.contains("No such file"),
        "{err}"
    );
    let out = run(dir.path(), &["diff", "M1", "M2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an srlm store"));
}
