//! The reward-model table through the real binary: `import oasst2` at full size on the real
//! files (disjoint splits in the paper's proportion), `eval-judge`'s measures and table (judged
//! by a stub server whose scores the test chooses: the stub stands in for a judge whose
//! answers are known, not for a real server), and `head2head` on the tiny model.
mod common;
#[path = "common/stub.rs"]
mod stub;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use common::{ok, run};
use serde_json::{json, Value};
use stub::{n_of, Reply, Stub};

fn read(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Ids, times and durations vary from run to run.
macro_rules! stable {
    ($($body:tt)*) => {
        insta::with_settings!({filters => vec![
            (r"\b[0-9a-f]{12}\b", "[id]"),
            (r"wall_s: [0-9.]+", "wall_s: [s]"),
        ]}, { $($body)* });
    };
}

#[test]
fn full_size_oasst2_import_splits_disjoint_prompts_in_the_papers_proportion() {
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
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let m = &v["record"]["metrics"];

    // What the sources hold, counted here from the raw rows.
    let eft_src = read(&scored);
    let eft_prompt_of_id: HashMap<&str, String> = eft_src
        .iter()
        .map(|r| {
            (
                r["prompt_id"].as_str().unwrap(),
                norm(r["prompt_text"].as_str().unwrap()),
            )
        })
        .collect();
    let all_eft_prompts: HashSet<&String> = eft_prompt_of_id.values().collect();
    let scored_rows = eft_src
        .iter()
        .filter(|r| r["quality_score"].is_number())
        .count();
    let rank0: Vec<Value> = read(&ranked)
        .into_iter()
        .filter(|r| r["rank"].as_f64() == Some(0.0))
        .collect();
    let rank0_kept = rank0
        .iter()
        .filter(|r| !all_eft_prompts.contains(&norm(r["question"].as_str().unwrap())))
        .count();

    let (ift, eft, eval) = (
        read(&dir.join("seed/ift.jsonl")),
        read(&dir.join("seed/eft.jsonl")),
        read(&dir.join("seed/eft_eval.jsonl")),
    );
    // IFT: every rank-0 answer whose prompt is not an EFT prompt.
    assert_eq!(ift.len(), rank0_kept, "{m}");
    assert_eq!(m["ift_rows"], rank0_kept);
    assert_eq!(m["ift_dropped_overlap"], rank0.len() - rank0_kept);
    // EFT train + evaluation: every human-scored response, each once.
    assert_eq!(eft.len() + eval.len(), scored_rows, "{m}");

    // The EFT train rows name their prompt only inside the judge prompt: find it.
    let judge_prompt_to_prompt: HashMap<String, &String> = eft_src
        .iter()
        .map(|r| {
            (
                srlm::engine::judge::judge_prompt(
                    r["prompt_text"].as_str().unwrap(),
                    r["response_text"].as_str().unwrap(),
                ),
                &eft_prompt_of_id[r["prompt_id"].as_str().unwrap()],
            )
        })
        .collect();
    let train: HashSet<&String> = eft
        .iter()
        .map(|r| judge_prompt_to_prompt[r["prompt"].as_str().unwrap()])
        .collect();
    let held_out: HashSet<String> = eval
        .iter()
        .map(|r| norm(r["prompt"].as_str().unwrap()))
        .collect();
    let ift_prompts: HashSet<String> = ift
        .iter()
        .map(|r| norm(r["prompt"].as_str().unwrap()))
        .collect();
    // Disjoint by prompt, three ways.
    assert!(train.iter().all(|p| !held_out.contains(*p)));
    assert!(ift_prompts.iter().all(|p| !held_out.contains(p)));
    assert!(ift_prompts.iter().all(|p| !train.contains(p)));
    assert_eq!(m["eft_prompts"], train.len());
    assert_eq!(m["eval_prompts"], held_out.len());
    // The paper's proportion: 531 of 1,775 + 531 held out, here by prompt.
    let share = held_out.len() as f64 / (held_out.len() + train.len()) as f64;
    let paper = 531.0 / (1775.0 + 531.0);
    assert!(
        (share - paper).abs() < 0.005,
        "held out {share:.4}, paper {paper:.4}"
    );
    eprintln!(
        "full-size import: IFT {} rows; EFT train {} rows / {} prompts; eval {} rows / {} prompts",
        ift.len(),
        eft.len(),
        train.len(),
        eval.len(),
        held_out.len()
    );
}

/// A judge on a stub server: the score is the digit after `q=` in the response it is shown,
/// and a response marked `q=?` gets a judgement without a score.
fn scoring_stub() -> Stub {
    Stub::start(
        &["judge"],
        Box::new(|r, _| {
            let prompt = r.body["messages"].as_array().unwrap().last().unwrap()["content"]
                .as_str()
                .unwrap()
                .to_string();
            let resp = prompt
                .split_once("<response>")
                .and_then(|(_, t)| t.split_once("</response>"))
                .map(|(r, _)| r.to_string())
                .unwrap_or_default();
            let text = match resp.split_once("q=").map(|(_, t)| t.chars().next()) {
                Some(Some(d)) if d.is_ascii_digit() => format!("Fine.\nScore: {d}"),
                _ => "I cannot tell.".to_string(),
            };
            let n = n_of(r);
            let choices: Vec<Value> = (0..n)
                .map(|i| json!({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}))
                .collect();
            Reply::Json(
                200,
                json!({"model": "judge", "choices": choices, "usage": {"prompt_tokens": 10, "completion_tokens": 3}}),
            )
        }),
    )
}

#[test]
fn eval_judge_reports_every_measure_with_its_count_and_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["init"]);
    // prompt → (human quality, the score the stub judge will give)
    let rows = [
        ("a", 0.9, "5"),
        ("a", 0.1, "2"),
        ("a", 0.5, "5"), // a judge tie with the first
        ("b", 1.0, "?"), // unparsed
        ("b", 0.0, "3"),
        ("c", 0.2, "1"),
        ("c", 0.7, "4"),
        ("c", 0.4, "3"), // c's order is exactly the humans'
        ("d", 0.6, "4"),
        ("d", 0.3, "4"), // a constant judge on d
    ];
    let text: String = rows
        .iter()
        .enumerate()
        .map(|(i, (p, q, s))| {
            format!(
                "{}\n",
                json!({"prompt_id": p, "prompt": format!("question {p}"), "response_id": format!("r{i}"), "response": format!("answer q={s}"), "quality_score": q})
            )
        })
        .collect();
    std::fs::write(dir.join("eval.jsonl"), text).unwrap();
    let stub = scoring_stub();
    let args = [
        "eval-judge",
        "--server",
        &stub.url,
        "--eval",
        "eval.jsonl",
        "--samples",
        "1",
    ];
    let table = ok(dir, &args);
    stable!(insta::assert_snapshot!("eval_judge_table", table));

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v: Value = serde_json::from_str(&ok(dir, &json_args)).unwrap();
    assert_eq!(
        v["reused"], true,
        "the same inputs and parameters: the run is reused"
    );
    let m = &v["record"]["metrics"];
    // pairs: a 3, b 1, c 3, d 1 = 8; agree: a 2, c 3 = 5
    assert_eq!(
        (m["pairs"].as_u64(), m["agree"].as_u64()),
        (Some(8), Some(5)),
        "{m}"
    );
    assert_eq!(m["accuracy"].as_f64(), Some(5.0 / 8.0));
    assert!(
        m["accuracy_lo"].as_f64().unwrap() < 0.625 && m["accuracy_hi"].as_f64().unwrap() > 0.625
    );
    assert_eq!(
        (
            m["ranked_prompts"].as_u64(),
            m["exact_match_prompts"].as_u64()
        ),
        (Some(4), Some(1))
    );
    assert_eq!(
        (
            m["five_responses"].as_u64(),
            m["five_best_responses"].as_u64()
        ),
        (Some(2), Some(1))
    );
    // a, c and d have two parsed responses; d's judge is constant (ρ = 0 there)
    assert_eq!(
        (
            m["correlation_prompts"].as_u64(),
            m["judge_constant_prompts"].as_u64()
        ),
        (Some(3), Some(1))
    );
    assert_eq!(m["unparsed_responses"], 1);
}

/// A store with two different tiny models committed as `x` and `y`, and five prompts (one
/// repeated).
fn two_models(dir: &Path) {
    ok(dir, &["init"]);
    srlm::engine::fixture::write_tiny_model(&dir.join("x"), 11).expect("tiny model");
    srlm::engine::fixture::write_tiny_model(&dir.join("y"), 12).expect("tiny model");
    let prompts: String = [
        "Say hi.",
        "Name a colour.",
        "Say hi.",
        "Count to three.",
        "Why?",
        "Add 2 and 2.",
    ]
    .iter()
    .map(|p| format!("{}\n", json!({ "prompt": p })))
    .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
    ok(dir, &["add", "x", "y", "prompts.jsonl"]);
    ok(dir, &["commit", "-m", "two tiny models"]);
}

fn head2head(dir: &Path, a: &str, b: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "head2head",
        "--a",
        a,
        "--b",
        b,
        "--prompts",
        "prompts.jsonl",
        "--n-prompts",
        "4",
        "--max-tokens",
        "6",
        "--seed",
        "3",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(dir, &args)).unwrap()
}

const TINY_JUDGE: &[&str] = &["--judge", "HEAD:x", "--method", "digits", "--samples", "1"];

#[test]
fn head2head_counts_wins_ties_and_losses_with_a_fixed_judge() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    two_models(dir);

    let xy = head2head(dir, "HEAD:x", "HEAD:y", TINY_JUDGE);
    let m = &xy["record"]["metrics"];
    // four distinct prompts ("Say hi." twice is one)
    assert_eq!(m["prompts"], 4, "{m}");
    let rows = read(&dir.join("eval/head2head.jsonl"));
    assert_eq!(rows.len(), 4);
    let prompts: Vec<&str> = rows.iter().map(|r| r["prompt"].as_str().unwrap()).collect();
    assert_eq!(
        prompts,
        ["Say hi.", "Name a colour.", "Count to three.", "Why?"]
    );
    let n = |k: &str| m[k].as_u64().unwrap();
    assert_eq!(n("wins") + n("ties") + n("losses") + n("unjudged"), 4);
    for r in &rows {
        let (a, b) = (r["score_a"].as_f64(), r["score_b"].as_f64());
        let want = match (a, b) {
            (Some(a), Some(b)) if a > b => "win",
            (Some(a), Some(b)) if a < b => "loss",
            (Some(_), Some(_)) => "tie",
            _ => "unjudged",
        };
        assert_eq!(r["outcome"], want, "{r}");
    }
    let judged = n("judged");
    if judged > 0 {
        assert_eq!(m["win"].as_f64(), Some(n("wins") as f64 / judged as f64));
        assert!(
            m["win_lo"].as_f64() <= m["win"].as_f64() && m["win"].as_f64() <= m["win_hi"].as_f64()
        );
    }
    let rec = &xy["record"];
    for role in ["a", "b", "judge", "prompts"] {
        assert!(rec["inputs"].get(role).is_some(), "input {role}: {rec}");
    }
    assert_eq!(rec["engine"]["judge"]["backend"], "in-process", "{rec}");
    assert!(xy["commit"].is_string(), "committed like every stage");

    // swapped: A's wins are B's, the ties stay (one seed, one judge, scored one by one)
    let yx = head2head(dir, "HEAD:y", "HEAD:x", TINY_JUDGE);
    let s = &yx["record"]["metrics"];
    assert_eq!(
        (s["wins"].as_u64(), s["losses"].as_u64()),
        (m["losses"].as_u64(), m["wins"].as_u64())
    );
    assert_eq!(s["ties"], m["ties"]);

    // a model against itself answers every prompt alike (same seed): all ties
    let xx = head2head(dir, "HEAD:x", "HEAD:x", TINY_JUDGE);
    assert_eq!(
        xx["record"]["metrics"]["ties"], 4,
        "{}",
        xx["record"]["metrics"]
    );
    for r in read(&dir.join("eval/head2head.jsonl")) {
        assert_eq!(r["response_a"], r["response_b"]);
    }
    // the same seed, inputs and threads give the same bytes: the run replays exactly
    let out = ok(dir, &["reproduce", "HEAD:eval/head2head.jsonl"]);
    assert!(
        out.contains("head2head") && out.contains("reproduced identically"),
        "{out}"
    );
}

#[test]
fn head2head_on_a_server_judge_prints_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    two_models(dir);
    // the tiny models never write `q=`: every judgement is unparsed, so every prompt unjudged
    let stub = scoring_stub();
    let out = ok(
        dir,
        &[
            "head2head",
            "--a",
            "HEAD:x",
            "--b",
            "HEAD:y",
            "--prompts",
            "prompts.jsonl",
            "--n-prompts",
            "2",
            "--max-tokens",
            "4",
            "--samples",
            "2",
            "--server",
            &stub.url,
        ],
    );
    stable!(insta::assert_snapshot!("head2head_server_unjudged", out));
    // two prompts, two responses each, one request of n = 2 samples per response
    let chats = stub.chats();
    assert_eq!(chats.len(), 4);
    assert!(chats.iter().all(|c| n_of(c) == 2));
    // --judge and --server together are refused
    let o = run(
        dir,
        &[
            "head2head",
            "--a",
            "x",
            "--b",
            "y",
            "--prompts",
            "prompts.jsonl",
            "--judge",
            "x",
            "--server",
            &stub.url,
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}
