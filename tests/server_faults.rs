//! How the server client copes with a misbehaving server, through the real binary against a
//! small in-test stub (fault injection only; the feature itself is tested against llama.cpp's
//! server in `server_llama.rs`): retries with backoff on 500 and 429, an immediate failure on
//! other 4xx with the server's message, timeouts, cut-off, malformed and non-UTF-8 replies,
//! replies without choices or with fewer than `n`, model selection, and the API key never
//! recorded. Every failure names the request, keeps the finished rows, and a re-run continues.
mod common;
#[path = "common/stub.rs"]
mod stub;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use stub::{completion, n_of, Reply, Stub};

fn srlm(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = common::srlm();
    c.current_dir(dir)
        .args(args)
        .env_remove("SRLM_API_KEY")
        .env_remove("OPENAI_API_KEY");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("srlm runs")
}

fn store_with_prompts(n: usize) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let out = srlm(d.path(), &["init"], &[]);
    assert!(out.status.success(), "{out:?}");
    let rows: String = (0..n)
        .map(|i| json!({"prompt_id": format!("p{i:05}"), "prompt": format!("Question {i}?"), "source": "t"}).to_string() + "\n")
        .collect();
    std::fs::write(d.path().join("prompts.jsonl"), rows).unwrap();
    d
}

/// `gen-responses` on the stub with quick retries; extra flags appended.
fn gen(dir: &Path, url: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "gen-responses",
        "--server",
        url,
        "--prompts",
        "prompts.jsonl",
        "--retry-base-ms",
        "1",
        "--json",
        "-q",
    ];
    // defaults unless the test gives its own
    for (flag, v) in [("--n", "2"), ("--retries", "2"), ("--concurrency", "1")] {
        if !extra.contains(&flag) {
            args.extend([flag, v]);
        }
    }
    args.extend_from_slice(extra);
    srlm(dir, &args, &[])
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn rows(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("gen/responses.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn server_errors_are_retried_with_backoff_and_recorded() {
    let d = store_with_prompts(3);
    // the first two chat requests fail with 500, then the server recovers
    let s = Stub::start(
        &["m"],
        Box::new(|r, k| match k {
            0 | 1 => Reply::Json(500, json!({"error": {"message": "overloaded"}})),
            _ => Reply::Json(200, completion(n_of(r), "ok")),
        }),
    );
    let v = ok_json(&gen(d.path(), &s.url, &[]));
    let rec = &v["record"];
    assert_eq!(rec["metrics"]["retries"], 2);
    assert_eq!(rec["metrics"]["responses"], 6);
    assert_eq!(rec["engine"]["backend"], "server");
    assert_eq!(rec["engine"]["model"], "m");
    assert_eq!(rec["engine"]["endpoint"]["host"], "127.0.0.1");
    assert_eq!(rec["engine"]["client"]["retries"], 2);
    assert_eq!(rec["params"]["server"]["url"], s.url);
    assert_eq!(s.chats().len(), 5);
    // ordered by prompt and candidate index
    let got: Vec<(String, u64)> = rows(d.path())
        .iter()
        .map(|r| {
            (
                r["prompt_id"].as_str().unwrap().to_string(),
                r["index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got[0], ("p00000".to_string(), 0));
    assert_eq!(got[5], ("p00002".to_string(), 1));
}

#[test]
fn a_429_storm_fails_naming_the_request_and_a_rerun_sends_only_the_rest() {
    let d = store_with_prompts(4);
    // prompts 0 and 1 answer; the next three tries (a first try and two retries) get 429;
    // then the storm is over
    let s = Stub::start(
        &["m"],
        Box::new(|r, k| match k {
            2..=4 => Reply::Json(429, json!({"error": {"message": "slow down"}})),
            _ => Reply::Json(200, completion(n_of(r), if k < 2 { "a" } else { "b" })),
        }),
    );
    let e = stderr(&gen(d.path(), &s.url, &[]));
    assert!(e.contains("prompt p00002"), "{e}");
    assert!(e.contains("HTTP 429") && e.contains("slow down"), "{e}");
    assert!(e.contains("gave up after 3 tries"), "{e}");
    assert!(e.contains("2 of 4 done are kept"), "{e}");
    assert_eq!(s.chats().len(), 5, "nothing is sent after the failure");
    let v = ok_json(&gen(d.path(), &s.url, &[]));
    assert_eq!(v["record"]["metrics"]["journal_reused"], 2);
    assert_eq!(v["record"]["metrics"]["requests_sent"], 2);
    assert_eq!(s.chats().len(), 7, "only the missing prompts are sent");
    let r = rows(d.path());
    assert_eq!(r.len(), 8);
    assert_eq!(r[0]["response"], "a 0");
    assert_eq!(r[7]["response"], "b 1");
    // the journal is gone once the run is recorded
    let j = d.path().join(".srlm/journal");
    assert!(!j.exists() || std::fs::read_dir(&j).unwrap().next().is_none());
}

#[test]
fn other_client_errors_fail_at_once_with_the_servers_message() {
    let d = store_with_prompts(2);
    let s = Stub::start(
        &["m"],
        Box::new(|_, _| Reply::Json(400, json!({"error": {"message": "max_tokens too large"}}))),
    );
    let e = stderr(&gen(d.path(), &s.url, &["--n", "1"]));
    assert!(e.contains("HTTP 400: max_tokens too large"), "{e}");
    assert!(e.contains("prompt p00000"), "{e}");
    assert_eq!(
        s.chats().len(),
        1,
        "no retry, and no further request after a failure"
    );
}

#[test]
fn a_server_that_refuses_n_above_one_is_asked_one_candidate_at_a_time() {
    let d = store_with_prompts(2);
    let s = Stub::start(
        &["m"],
        Box::new(|r, _| match n_of(r) {
            1 => Reply::Json(200, completion(1, "one")),
            _ => Reply::Json(
                400,
                json!({"error": {"message": "Only one completion choice is allowed"}}),
            ),
        }),
    );
    let v = ok_json(&gen(d.path(), &s.url, &["--n", "3"]));
    assert_eq!(v["record"]["engine"]["one_choice_per_request"], true);
    // one refused request, then one per candidate
    assert_eq!(s.chats().len(), 1 + 6);
    assert_eq!(rows(d.path()).len(), 6);
}

#[test]
fn cut_off_and_malformed_replies_are_retried_then_reported() {
    let d = store_with_prompts(1);
    let s = Stub::start(
        &["m"],
        Box::new(|r, k| match k {
            0 => Reply::CutOff(br#"{"choices":[{"mess"#.to_vec()),
            1 => Reply::Raw(200, b"{not json".to_vec()),
            _ => Reply::Json(200, completion(n_of(r), "fine")),
        }),
    );
    let v = ok_json(&gen(d.path(), &s.url, &[]));
    assert_eq!(v["record"]["metrics"]["retries"], 2);
    let s2 = Stub::start(
        &["m"],
        Box::new(|_, _| Reply::Raw(200, b"<html>oops".to_vec())),
    );
    let e = stderr(&gen(d.path(), &s2.url, &["--rerun"]));
    assert!(
        e.contains("malformed reply") && e.contains("<html>oops"),
        "{e}"
    );
}

#[test]
fn non_utf8_no_choices_and_timeouts_are_clear_errors() {
    let d = store_with_prompts(1);
    let s = Stub::start(
        &["m"],
        Box::new(|_, _| Reply::Raw(200, vec![b'{', 0xff, 0xfe, b'}'])),
    );
    let e = stderr(&gen(d.path(), &s.url, &[]));
    assert!(e.contains("not UTF-8"), "{e}");
    let s = Stub::start(
        &["m"],
        Box::new(|_, _| Reply::Json(200, json!({"choices": []}))),
    );
    let e = stderr(&gen(d.path(), &s.url, &[]));
    assert!(
        e.contains("prompt p00000") && e.contains("no choices"),
        "{e}"
    );
    let s = Stub::start(
        &["m"],
        Box::new(|r, _| {
            Reply::Slow(
                Duration::from_secs(3),
                Box::new(Reply::Json(200, completion(n_of(r), "late"))),
            )
        }),
    );
    let e = stderr(&gen(
        d.path(),
        &s.url,
        &["--timeout", "0.5", "--retries", "0"],
    ));
    assert!(e.to_lowercase().contains("timed out"), "{e}");
}

#[test]
fn a_short_n_is_topped_up_and_a_reply_that_stays_short_is_named() {
    let d = store_with_prompts(2);
    // one choice whatever n says (as llama.cpp's server does)
    let s = Stub::start(
        &["m"],
        Box::new(|_, k| Reply::Json(200, completion(1, &format!("r{k}")))),
    );
    let v = ok_json(&gen(d.path(), &s.url, &["--n", "3"]));
    let chats = s.chats();
    assert_eq!(chats.len(), 6);
    let seeds: Vec<u64> = chats
        .iter()
        .map(|c| c.body["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(&seeds[..3], &[0, 1, 2], "each top-up moves the seed on");
    assert_eq!(n_of(&chats[1]), 2);
    assert_eq!(v["record"]["metrics"]["short_replies"], 4);
    assert_eq!(rows(d.path()).len(), 6);
    // a top-up that brings nothing
    let s = Stub::start(
        &["m"],
        Box::new(|_, k| match k {
            0 => Reply::Json(200, completion(1, "x")),
            _ => Reply::Json(200, json!({"choices": []})),
        }),
    );
    let e = stderr(&gen(d.path(), &s.url, &["--n", "3", "--rerun"]));
    assert!(
        e.contains("prompt p00000") && e.contains("1 of 3 candidates"),
        "{e}"
    );
}

#[test]
fn the_model_is_chosen_or_the_choice_is_explained() {
    let d = store_with_prompts(1);
    let s = Stub::start(
        &["a", "b"],
        Box::new(|r, _| Reply::Json(200, completion(n_of(r), "x"))),
    );
    let e = stderr(&gen(d.path(), &s.url, &[]));
    assert!(e.contains("several models") && e.contains("a, b"), "{e}");
    let e = stderr(&gen(d.path(), &s.url, &["--server-model", "c"]));
    assert!(e.contains("does not serve model `c`"), "{e}");
    let v = ok_json(&gen(d.path(), &s.url, &["--server-model", "b"]));
    assert_eq!(v["record"]["engine"]["model"], "b");
    assert_eq!(s.chats()[0].body["model"], "b");
    // nothing listens: a clear error, after the retries
    drop(s);
    let e = stderr(&gen(d.path(), "http://127.0.0.1:9/v1", &["--rerun"]));
    assert!(
        e.contains("127.0.0.1:9") && e.to_lowercase().contains("connect"),
        "{e}"
    );
}

#[test]
fn the_api_key_is_sent_but_never_recorded_or_shown() {
    let d = store_with_prompts(1);
    let s = Stub::start(
        &["m"],
        Box::new(|r, _| Reply::Json(200, completion(n_of(r), "x"))),
    );
    let mut args = vec![
        "gen-responses",
        "--server",
        &s.url,
        "--prompts",
        "prompts.jsonl",
        "--json",
        "-q",
    ];
    args.extend(["--n", "1"]);
    let out = srlm(d.path(), &args, &[("SRLM_API_KEY", "sk-secret-123")]);
    let v = ok_json(&out);
    assert_eq!(
        s.chats()[0].authorization.as_deref(),
        Some("Bearer sk-secret-123")
    );
    assert!(!v.to_string().contains("sk-secret"));
    let log = srlm(d.path(), &["show", "HEAD", "--json"], &[]);
    assert!(!String::from_utf8_lossy(&log.stdout).contains("sk-secret"));
    // a key in the URL would be recorded: refused
    let e = stderr(&srlm(
        d.path(),
        &[
            "gen-responses",
            "--server",
            "http://u:sk-x@127.0.0.1:9/v1",
            "--prompts",
            "prompts.jsonl",
        ],
        &[],
    ));
    assert!(e.contains("SRLM_API_KEY") && !e.contains("sk-x"), "{e}");
}

#[test]
fn reproduce_replays_a_server_run_on_the_recorded_endpoint_or_refuses() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let d = store_with_prompts(2);
    let changed = Arc::new(AtomicBool::new(false));
    let c = changed.clone();
    let s = Stub::start(
        &["m"],
        Box::new(move |r, _| {
            let text = if c.load(Ordering::SeqCst) {
                "other"
            } else {
                "same"
            };
            Reply::Json(200, completion(n_of(r), text))
        }),
    );
    ok_json(&gen(d.path(), &s.url, &[]));
    let out = srlm(d.path(), &["reproduce", "HEAD:gen/responses.jsonl"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "replayed on the server {}: 0 output(s) differ",
            s.url
        )),
        "{text}"
    );
    assert_eq!(
        s.chats().len(),
        4,
        "the replay asked the recorded server again"
    );
    // the server now answers otherwise: the rows differ and the exit status says so
    changed.store(true, Ordering::SeqCst);
    let out = srlm(d.path(), &["reproduce", "HEAD:gen/responses.jsonl"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success());
    assert!(
        text.contains("1 output(s) differ") && text.contains("not bit-deterministic"),
        "{text}"
    );
    // the server is gone: refused, with the reason
    let url = s.url.clone();
    drop(s);
    let out = srlm(d.path(), &["reproduce", "HEAD:gen/responses.jsonl"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success());
    assert!(
        text.contains("refused: the recorded server does not answer") && text.contains(&url),
        "{text}"
    );
}
