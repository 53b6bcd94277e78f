//! The whole loop on the tiny random-weight llama, through the real binary:
//! import → sft → iterate 2 → reproduce, resume after a kill, and a diverging reproduction.
mod common;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

fn run(dir: &Path, args: &[&str]) -> Output {
    run_threads(dir, args, None)
}

/// Run with `RAYON_NUM_THREADS` set when `threads` is given.
fn run_threads(dir: &Path, args: &[&str], threads: Option<usize>) -> Output {
    let mut cmd = common::srlm();
    if let Some(n) = threads {
        cmd.env("RAYON_NUM_THREADS", n.to_string());
    }
    cmd.current_dir(dir).args(args).output().expect("srlm runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    ok_threads(dir, args, None)
}

fn ok_threads(dir: &Path, args: &[&str], threads: Option<usize>) -> String {
    let out = run_threads(dir, args, threads);
    assert!(
        out.status.success(),
        "srlm {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ITERATE: &[&str] = &[
    "iterate",
    "--from",
    "M1",
    "--iterations",
    "2",
    "--prompts",
    "2",
    "--shots",
    "2",
    "--n",
    "3",
    "--max-tokens",
    "6",
    "--method",
    "digits",
    "--samples",
    "1",
    "--lr",
    "1e-3",
    "--seed",
    "5",
];

/// A store with the tiny model as M0 and the built-in seed set, trained to M1.
fn setup(dir: &Path) {
    setup_threads(dir, None)
}

fn setup_threads(dir: &Path, threads: Option<usize>) {
    let ok = |dir: &Path, args: &[&str]| ok_threads(dir, args, threads);
    ok(dir, &["init"]);
    srlm::engine::fixture::write_tiny_model(&dir.join("base/tiny"), 11).expect("tiny model");
    ok(dir, &["add", "base/tiny"]);
    ok(dir, &["commit", "-m", "M0: tiny base"]);
    ok(dir, &["tag", "M0"]);
    ok(dir, &["import", "builtin"]);
    ok(
        dir,
        &[
            "sft",
            "--base",
            "M0:base/tiny",
            "--ift",
            "HEAD:seed/ift.jsonl",
            "--eft",
            "HEAD:seed/eft.jsonl",
            "--max-tokens",
            "48",
            "--grad-accum",
            "8",
            "--lr",
            "1e-3",
            "--tag",
            "M1",
        ],
    );
}

/// Training and generation give the same bytes with one thread and with two: the issue's
/// determinism requirement, and what lets `reproduce` check a run made on another machine.
#[test]
fn one_and_two_threads_give_identical_checkpoints_and_text() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    setup_threads(a.path(), Some(1));
    setup_threads(b.path(), Some(2));
    let weights = |d: &Path| std::fs::read(d.join("model/model.safetensors")).unwrap();
    assert!(weights(a.path()) == weights(b.path()), "SFT weights differ");
    let gen = [
        "generate",
        "--model",
        "model",
        "--prompt",
        "Say hi.",
        "--n",
        "3",
        "--seed",
        "4",
        "--max-tokens",
        "12",
        "--json",
    ];
    let text = |d: &Path, n| {
        let v: Value = serde_json::from_str(&ok_threads(d, &gen, Some(n))).unwrap();
        v["candidates"].clone()
    };
    let one = text(a.path(), 1);
    assert_eq!(one.as_array().map(Vec::len), Some(3), "{one}");
    assert_eq!(one, text(b.path(), 2));
}

fn tags(dir: &Path) -> String {
    ok(dir, &["tag"])
}

#[test]
fn loop_runs_records_and_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let summary = ok(dir, ITERATE);
    assert!(summary.contains("dpo"), "{summary}");
    let t = tags(dir);
    for tag in ["M0", "M1", "M2", "M3", "AIFT(M1)", "AIFT(M2)"] {
        assert!(t.contains(tag), "tag {tag} missing in:\n{t}");
    }

    // Every commit after M0 carries a run record whose inputs resolve to committed objects.
    let log: Value = serde_json::from_str(&ok(dir, &["log", "--json"])).expect("log --json");
    let commits = log.as_array().expect("array of commits");
    let with_runs: Vec<&Value> = commits.iter().filter(|c| !c["run"].is_null()).collect();
    // seed, sft, and 5 stages per iteration
    assert_eq!(with_runs.len(), 2 + 2 * 5, "{log:#}");

    // The lineage of M3 goes back to the base model and the seed data.
    let lineage = ok(
        dir,
        &["lineage", "M3:model/model.safetensors", "--format", "json"],
    );
    for stage in [
        "dpo",
        "pairs",
        "judge",
        "gen-responses",
        "gen-prompts",
        "sft",
        "seed",
    ] {
        assert!(
            lineage.contains(&format!("\"{stage}\"")),
            "stage {stage} missing from lineage:\n{lineage}"
        );
    }

    exact_lineage_of_m3(dir);

    // Two checkpoints: one path, the tensors that changed, the bytes the second added.
    let diff = ok(dir, &["diff", "M1", "M2"]);
    assert!(!diff.contains("model/config.json"), "{diff}");
    let line = diff
        .lines()
        .find(|l| l.starts_with("checkpoint model:"))
        .unwrap_or_else(|| panic!("no checkpoint summary:\n{diff}"));
    assert!(line.contains("model.safetensors"), "{line}");
    assert!(
        line.contains("tensor(s) changed") && line.contains("added to the store"),
        "{line}"
    );
    assert!(diff.contains("max abs diff"), "{diff}");
    let j: Value = serde_json::from_str(&ok(dir, &["diff", "M1", "M2", "--json"])).unwrap();
    let c = &j["checkpoints"][0];
    assert_eq!(c["path"], "model", "{j:#}");
    assert!(c["added_bytes"].as_u64().unwrap() > 0, "{c:#}");
    assert!(!c["tensors"].as_array().unwrap().is_empty(), "{c:#}");

    // Reproduce everything upstream of M3: identical, exit 0; a checkpoint is one row.
    let rep = run(dir, &["reproduce", "M3:model/model.safetensors"]);
    let text = String::from_utf8_lossy(&rep.stdout);
    assert!(
        rep.status.success(),
        "reproduce failed:\n{text}\n{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    assert!(text.contains("reproduced identically"), "{text}");
    let model_rows = text.lines().filter(|l| l.contains(" model ")).count();
    // sft and two dpo runs: one row each for their checkpoint
    assert_eq!(model_rows, 3, "{text}");
    assert!(!text.contains("config.json"), "{text}");

    // A deliberately altered parameter: the DPO stages no longer reproduce, and the first of
    // them is named; nothing upstream of it is blamed.
    let rep = run(
        dir,
        &[
            "reproduce",
            "M3:model/model.safetensors",
            "--set",
            "dpo.beta=0.5",
        ],
    );
    let text = String::from_utf8_lossy(&rep.stdout);
    assert_eq!(rep.status.code(), Some(3), "{text}");
    assert!(text.contains("first diverging stage: dpo"), "{text}");
    let diverging: Vec<&str> = text.lines().filter(|l| l.contains("NO")).collect();
    assert!(
        !diverging.is_empty() && diverging.iter().all(|l| l.contains("dpo")),
        "{text}"
    );
}

/// `lineage M3`: every input carries the commit it was resolved from, no upstream run started
/// after M3's run finished, a checkpoint is one node, and the text fits a screen.
fn exact_lineage_of_m3(dir: &Path) {
    let j: Value = serde_json::from_str(&ok(dir, &["lineage", "M3", "--format", "json"])).unwrap();
    let runs = j["runs"].as_array().unwrap();
    let target = &runs[0];
    assert_eq!(target["stage"], "dpo", "{j:#}");
    assert_eq!(target["tags"], serde_json::json!(["M3"]), "{j:#}");
    let finished = target["finished"].as_str().unwrap();
    let mut stages: Vec<&str> = Vec::new();
    for r in runs {
        assert!(
            r["started"].as_str().unwrap() <= finished,
            "run {} ({}) started after M3's run finished",
            r["id"],
            r["stage"]
        );
        stages.push(r["stage"].as_str().unwrap());
        for (role, input) in r["inputs"].as_object().unwrap() {
            assert_eq!(
                input["source"]["from"], "commit",
                "{} input {role} has no source commit: {input:#}",
                r["stage"]
            );
            assert!(input["source"]["commit"].is_string(), "{input:#}");
        }
    }
    // seed, sft, and five stages per iteration: each run once
    stages.sort();
    assert_eq!(
        stages,
        [
            "dpo",
            "dpo",
            "gen-prompts",
            "gen-prompts",
            "gen-responses",
            "gen-responses",
            "judge",
            "judge",
            "pairs",
            "pairs",
            "seed",
            "sft"
        ],
        "{j:#}"
    );
    // a checkpoint is one input and one output
    let roles = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(roles(&target["inputs"]), ["pairs", "policy"]);
    assert_eq!(roles(&target["outputs"]), ["model"]);
    assert_eq!(target["outputs"]["model"]["kind"], "checkpoint");
    assert_eq!(
        target["inputs"]["policy"]["tags"],
        serde_json::json!(["M2"])
    );
    assert_eq!(
        target["inputs"]["pairs"]["tags"],
        serde_json::json!(["AIFT(M2)"])
    );
    let sft = runs.iter().find(|r| r["stage"] == "sft").unwrap();
    assert_eq!(sft["inputs"]["base"]["path"], "base/tiny");
    assert_eq!(sft["inputs"]["base"]["tags"], serde_json::json!(["M0"]));

    let text = ok(dir, &["lineage", "M3"]);
    let lines = text.lines().count();
    assert!(lines <= 40, "{lines} lines:\n{text}");
    for tag in ["M3", "M2", "AIFT(M2)", "M1", "AIFT(M1)", "M0"] {
        assert!(
            text.contains(&format!("] {tag}")),
            "{tag} not shown:\n{text}"
        );
    }
    assert_eq!(text.matches("sft v").count(), 1, "{text}");
    insta::assert_snapshot!("lineage_m3_text", normalise(&text));
    let short = ok(dir, &["lineage", "M3", "--depth", "1"]);
    assert!(short.lines().count() <= 4, "{short}");
    assert!(short.contains("(deeper runs not shown)"), "{short}");
}

/// Ids and times replaced, so the snapshot holds the shape (ids depend on floating point, run
/// ids on time).
fn normalise(text: &str) -> String {
    let word = |w: &str| -> String {
        let core = w.trim_end_matches(']');
        let tail = &w[core.len()..];
        let hex = core.len() == 12 && core.chars().all(|c| c.is_ascii_hexdigit());
        let time = core.len() == 24 && core.ends_with('Z') && core.as_bytes()[10] == b'T';
        match (hex, time) {
            (true, _) => format!("<id>{tail}"),
            (_, true) => format!("<time>{tail}"),
            _ => w.to_string(),
        }
    };
    text.lines()
        .map(|l| l.split(' ').map(word).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn killed_iterate_resumes_without_redoing_committed_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    // A post-commit hook kills srlm right after the first `judge` commit (once).
    let hook = dir.join(".srlm/hooks/post-commit");
    let marker = dir.join("killed-once");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncase \"$SRLM_CHANGED_PATHS\" in *judgements*) if [ ! -e {m} ]; then touch {m}; kill -9 $PPID; fi;; esac\nexit 0\n",
            m = marker.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let first = run(dir, ITERATE);
    assert!(
        !first.status.success(),
        "the hook should have killed the first run"
    );
    assert!(marker.exists());
    // fsck is clean after the kill
    ok(dir, &["fsck"]);
    let second = run(dir, &[ITERATE, &["--json"]].concat());
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let summary: Value = serde_json::from_slice(&second.stdout).expect("summary json");
    let stages = summary.as_array().unwrap();
    let reused: Vec<&str> = stages
        .iter()
        .filter(|s| s["reused"] == Value::Bool(true))
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        reused,
        ["gen-prompts", "gen-responses", "judge"],
        "{summary:#}"
    );
    assert!(tags(dir).contains("M3"));
}

#[test]
fn import_oasst2_real_files() {
    let (Some(ranked), Some(scored)) = (
        common::shared_data("oasst2/oasst2_ranked_first_turns.jsonl"),
        common::shared_data("oasst2/oasst2_evaluation_fine_tuning.jsonl"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    let out = ok(
        dir,
        &[
            "import",
            "oasst2",
            "--ift",
            ranked.to_str().unwrap(),
            "--eft",
            scored.to_str().unwrap(),
            "--eft-from",
            "human",
            "--max-eft",
            "100",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let m = &v["record"]["metrics"];
    // every one of the 800 rank-0 answers is IFT, except those whose prompt is an EFT prompt
    assert!(m["ift_dropped_overlap"].as_u64().unwrap() >= 61, "{m}");
    assert_eq!(
        m["ift_rows"].as_u64().unwrap() + m["ift_dropped_overlap"].as_u64().unwrap(),
        800,
        "{m}"
    );
    assert_eq!(m["eft_rows"], 100, "{m}");
    let read = |p: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join(p))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (ift, eft, eval) = (
        read("seed/ift.jsonl"),
        read("seed/eft.jsonl"),
        read("seed/eft_eval.jsonl"),
    );
    assert_eq!(eft.len(), 100);
    assert!(!eval.is_empty());
    // IFT prompts never appear in an EFT or evaluation judge prompt / row.
    let eval_prompts: std::collections::HashSet<&str> =
        eval.iter().map(|r| r["prompt"].as_str().unwrap()).collect();
    for r in &ift {
        assert!(!eval_prompts.contains(r["prompt"].as_str().unwrap()));
    }
    for r in &eft {
        assert!(r["response"].as_str().unwrap().contains("\nScore: "));
        assert!(r["prompt"]
            .as_str()
            .unwrap()
            .starts_with("Review the user’s question"));
    }
    // The sources were copied into the store, so the run names their exact bytes.
    assert!(dir
        .join("sources/oasst2/oasst2_ranked_first_turns.jsonl")
        .exists());
    assert_eq!(
        v["record"]["inputs"]["ift"]["path"],
        "sources/oasst2/oasst2_ranked_first_turns.jsonl"
    );
}

#[test]
fn eval_judge_scores_every_response_and_counts_human_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let rows = [
        ("a", "r1", "Paris is the capital of France.", 0.9),
        ("a", "r2", "I like cheese.", 0.1),
        ("a", "r3", "France's capital is Paris, on the Seine.", 0.7),
        ("b", "r4", "Two.", 0.5),
        ("b", "r5", "Four.", 0.5), // a human tie: not a pair
    ];
    let text: String = rows
        .iter()
        .map(|(p, id, r, q)| {
            format!(
                "{}\n",
                serde_json::json!({"prompt_id": p, "prompt": format!("question {p}"), "response_id": id, "response": r, "quality_score": q})
            )
        })
        .collect();
    std::fs::write(dir.join("eval.jsonl"), text).unwrap();
    let out = ok(
        dir,
        &[
            "eval-judge",
            "--model",
            "M1:model",
            "--eval",
            "eval.jsonl",
            "--method",
            "digits",
            "--samples",
            "1",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let m = &v["record"]["metrics"];
    assert_eq!(m["pairs"], 3, "{m}");
    assert_eq!(m["unparsed_responses"], 0, "{m}");
    let agree = m["agree"].as_u64().unwrap();
    assert_eq!(m["accuracy"].as_f64().unwrap(), agree as f64 / 3.0, "{m}");
    let scores = std::fs::read_to_string(dir.join("eval/judge_scores.jsonl")).unwrap();
    assert_eq!(scores.lines().count(), 5);
}

#[test]
fn iterate_with_a_fixed_judge_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let mut args: Vec<&str> = ITERATE.to_vec();
    args[4] = "1"; // one iteration
    args.extend(["--judge-model", "M0:base/tiny"]);
    ok(dir, &args);
    let lineage = ok(
        dir,
        &[
            "lineage",
            "AIFT(M1):gen/judgements.jsonl",
            "--format",
            "json",
        ],
    );
    assert!(lineage.contains("\"path\": \"base/tiny\""), "{lineage}");
}

/// `srlm bench loop` runs one whole iteration through the real stages in a fresh store and
/// reports every stage with its own seconds and peak memory.
#[test]
fn bench_loop_times_every_stage_of_one_iteration() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    srlm::engine::fixture::write_tiny_model(&model, 11).expect("tiny model");
    let model = model.to_str().unwrap();
    let args = [
        "-q",
        "bench",
        "loop",
        "--model",
        model,
        "--prompts",
        "2",
        "--n",
        "2",
        "--method",
        "digits",
        "--max-tokens",
        "8",
        "--dir",
        "store",
        "--json",
    ];
    let v: Value = serde_json::from_str(&ok(tmp.path(), &args)).unwrap();
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "seed",
            "sft",
            "gen-prompts",
            "gen-responses",
            "judge",
            "pairs",
            "dpo"
        ],
        "{v}"
    );
    assert!(v["error"].is_null(), "{v}");
    let mut sum = 0.0;
    for s in v["stages"].as_array().unwrap() {
        let secs = s["seconds"].as_f64().unwrap();
        assert!(secs >= 0.0, "{s}");
        if s["stage"] != "seed" && s["stage"] != "sft" {
            sum += secs;
        }
        assert!(s["peak_mb"].as_f64().unwrap() > 0.0, "{s}");
    }
    assert!(
        (v["iteration_seconds"].as_f64().unwrap() - sum).abs() < 1e-6,
        "{v}"
    );
    let gen = &v["stages"][3];
    assert!(gen["generated_tokens"].as_u64().unwrap() > 0, "{gen}");
    assert_eq!(gen["detail"], "4 responses", "{gen}");
    // the store is a real one: the iteration's model is tagged
    let log = ok(&tmp.path().join("store"), &["log", "--oneline"]);
    assert!(log.contains("M2"), "{log}");
}
