//! The stages on a real inference server: llama.cpp's OpenAI-compatible server from PyPI,
//! started on loopback by each test on the default GGUF and stopped by its pid. gen-prompts,
//! gen-responses and judge (sampled and digits) write their usual JSONL with run records
//! naming the server and its model; a stage killed mid-way and run again sends only the
//! missing requests; `iterate --server` generates on the server and runs DPO in process.
mod common;
#[path = "common/llama.rs"]
mod llama;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

fn run(dir: &Path, args: &[&str]) -> Output {
    common::srlm()
        .current_dir(dir)
        .args(args)
        .env_remove("SRLM_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("srlm runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "srlm {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok_json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The record names the server, its model, and has no model input.
fn assert_on_server(rec: &Value, url: &str) {
    assert_eq!(rec["engine"]["backend"], "server", "{rec}");
    assert_eq!(rec["params"]["server"]["url"], url);
    assert_eq!(rec["engine"]["endpoint"]["host"], "127.0.0.1");
    let model = rec["engine"]["model"].as_str().unwrap();
    assert!(model.contains("SmolLM2"), "served model id: {model}");
    assert!(rec["inputs"].get("model").is_none());
    assert!(rec["metrics"]["http_requests"].as_u64().unwrap() >= 1);
    assert!(rec["metrics"]["completion_tokens"].as_u64().unwrap() >= 1);
}

fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    ok(d.path(), &["init"]);
    ok(d.path(), &["import", "builtin"]);
    d
}

#[test]
fn stages_run_on_llama_cpp_server_and_are_recorded() {
    let Some(server) = llama::start() else { return };
    let url = server.url.as_str();
    let d = store();
    let dir = d.path();
    let common_flags = ["--server", url, "--json", "-q"];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(common_flags.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let args = with(&[
        "gen-prompts",
        "--seeds",
        "seed/ift.jsonl",
        "--count",
        "2",
        "--shots",
        "2",
        "--max-tokens",
        "40",
    ]);
    let v = ok_json(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_on_server(&v["record"], url);
    let prompts = jsonl(&dir.join("gen/prompts.jsonl"));
    assert!(!prompts.is_empty());
    assert_eq!(prompts[0]["prompt_id"], "p00000");

    let args = with(&[
        "gen-responses",
        "--prompts",
        "gen/prompts.jsonl",
        "--n",
        "2",
        "--max-tokens",
        "24",
    ]);
    let v = ok_json(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_on_server(&v["record"], url);
    let rows = jsonl(&dir.join("gen/responses.jsonl"));
    assert_eq!(rows.len(), prompts.len() * 2);
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r["prompt_id"], prompts[k / 2]["prompt_id"]);
        assert_eq!(r["index"], (k % 2) as u64);
        assert!(r["response"].is_string());
    }
    assert_eq!(v["record"]["params"]["sampling"]["seed"], 0);

    let args = with(&[
        "judge",
        "--responses",
        "gen/responses.jsonl",
        "--samples",
        "2",
        "--judge-max-tokens",
        "48",
    ]);
    let v = ok_json(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_on_server(&v["record"], url);
    let judged = jsonl(&dir.join("gen/judgements.jsonl"));
    assert_eq!(judged.len(), rows.len());
    for j in &judged {
        let texts = j["judgements"].as_array().unwrap();
        assert_eq!(texts.len(), 2);
        // each score is exactly what the parser finds in its judgement, or null
        for (t, s) in texts.iter().zip(j["scores"].as_array().unwrap()) {
            let parsed = srlm::engine::judge::parse_score(t.as_str().unwrap());
            assert_eq!(parsed, s.as_f64());
        }
    }

    let args = with(&[
        "judge",
        "--responses",
        "gen/responses.jsonl",
        "--method",
        "digits",
        "--judge-max-tokens",
        "96",
        "--out",
        "gen/digits.jsonl",
    ]);
    let v = ok_json(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_on_server(&v["record"], url);
    let digits = jsonl(&dir.join("gen/digits.jsonl"));
    assert_eq!(digits.len(), rows.len());
    for j in &digits {
        if let Some(s) = j["score"].as_f64() {
            assert!((0.0..=5.0).contains(&s), "{j}");
        }
        assert!(j["judgements"][0].is_string());
    }
}

/// Valid lines of the journal files under `.srlm/journal`.
fn journal_lines(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir.join(".srlm/journal")) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v.get("k").is_some()))
                .count()
        })
        .sum()
}

#[test]
fn a_killed_stage_on_the_server_resumes_sending_only_the_missing_requests() {
    let Some(server) = llama::start() else { return };
    let d = store();
    let dir = d.path();
    let prompts: String = (0..6)
        .map(|i| {
            serde_json::json!({"prompt_id": format!("p{i:05}"), "prompt": format!("Name a colour, number {i}."), "source": "t"})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
    let args = [
        "gen-responses",
        "--server",
        &server.url,
        "--prompts",
        "prompts.jsonl",
        "--n",
        "1",
        "--max-tokens",
        "24",
        "--concurrency",
        "1",
        "--json",
        "-q",
    ];
    let mut child = common::srlm()
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while journal_lines(dir) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(300), "no row journalled");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = journal_lines(dir);
    assert!((2..6).contains(&done), "{done} rows journalled at the kill");
    let v = ok_json(dir, &args);
    let m = &v["record"]["metrics"];
    assert_eq!(m["journal_reused"], done as u64);
    assert_eq!(
        m["requests_sent"],
        (6 - done) as u64,
        "only the missing requests"
    );
    let rows = jsonl(&dir.join("gen/responses.jsonl"));
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["prompt_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["p00000", "p00001", "p00002", "p00003", "p00004", "p00005"]
    );
    assert_eq!(
        journal_lines(dir),
        0,
        "the journal is removed once the run is recorded"
    );
}

#[test]
fn iterate_generates_on_the_server_and_trains_in_process() {
    let Some(server) = llama::start() else { return };
    let d = store();
    let dir = d.path();
    srlm::engine::fixture::write_tiny_model(&dir.join("base/tiny"), 11).unwrap();
    ok(dir, &["add", "base/tiny"]);
    ok(dir, &["commit", "-m", "M0"]);
    ok(dir, &["tag", "M0"]);
    ok(
        dir,
        &[
            "sft",
            "--base",
            "M0:base/tiny",
            "--ift",
            "seed/ift.jsonl",
            "--eft",
            "seed/eft.jsonl",
            "--max-tokens",
            "32",
            "--grad-accum",
            "8",
            "--tag",
            "M1",
        ],
    );
    let out = ok(
        dir,
        &[
            "iterate",
            "--from",
            "M1",
            "--iterations",
            "1",
            "--prompts",
            "2",
            "--shots",
            "2",
            "--n",
            "2",
            "--max-tokens",
            "16",
            // the shipped 135M model writes no parseable score, so the pairs come from the
            // in-process digit judge on M1 (as the demo does); the policy is on the server
            "--judge-model",
            "M1:model",
            "--method",
            "digits",
            "--server",
            &server.url,
            "--json",
            "-q",
        ],
    );
    let summary: Value = serde_json::from_str(&out).unwrap();
    let stages: Vec<&str> = summary
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["gen-prompts", "gen-responses", "judge", "pairs", "dpo"]
    );
    let metrics = |i: usize| &summary[i]["metrics"];
    assert!(
        metrics(0)["http_requests"].as_u64().unwrap() >= 2,
        "gen-prompts on the server"
    );
    assert!(
        metrics(1)["http_requests"].as_u64().unwrap() >= 4,
        "gen-responses on the server"
    );
    assert!(
        metrics(2).get("http_requests").is_none(),
        "the judge ran in process"
    );
    let show = ok(dir, &["log", "--json"]);
    assert!(show.contains("dpo"), "{show}");
    assert!(ok(dir, &["tag"]).contains("M2"));
}
