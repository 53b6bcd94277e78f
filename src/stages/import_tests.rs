//! Tests of `stages::import` (kept beside it, out of its file).
use super::*;
use serde_json::Value;
use std::path::Path;

fn write(dir: &Path, name: &str, lines: &[Value]) -> PathBuf {
    let p = dir.join(name);
    let text: String = lines.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn params(from: EftFrom) -> ImportParams {
    ImportParams {
        eft_from: from,
        eval_fraction: 0.5,
        max_ift: None,
        max_eft: None,
        max_eval: None,
        seed: 1,
        lang: "en".into(),
    }
}

#[test]
fn message_tree_and_flat_files() {
    let dir = tempfile::tempdir().unwrap();
    let tree = write(
        dir.path(),
        "tree.jsonl",
        &[
            serde_json::json!({"message_id":"p1","parent_id":null,"role":"prompter","text":"Q1","lang":"en"}),
            serde_json::json!({"message_id":"a1","parent_id":"p1","role":"assistant","text":"worse","lang":"en","rank":1}),
            serde_json::json!({"message_id":"a2","parent_id":"p1","role":"assistant","text":"best","lang":"en","rank":0.0}),
            serde_json::json!({"message_id":"p2","parent_id":null,"role":"prompter","text":"Q2","lang":"de"}),
            serde_json::json!({"message_id":"x","parent_id":"a2","role":"prompter","text":"follow-up","lang":"en"}),
        ],
    );
    let (fmt, threads) = read_threads(&tree, "en").unwrap();
    assert_eq!(fmt, SourceFormat::MessageTree);
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].answers.len(), 2);
    let out = build(
        &threads,
        &[],
        &params(EftFrom::Human),
        &|i, r| format!("{i}|{r}"),
        None,
    )
    .unwrap();
    assert_eq!(
        out.ift,
        vec![IftRow {
            prompt: "Q1".into(),
            response: "best".into()
        }]
    );

    let bad = write(dir.path(), "bad.jsonl", &[serde_json::json!({"foo": 1})]);
    let e = read_threads(&bad, "en").unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("foo"), "{e}");
}

#[test]
fn human_eft_split_and_disjoint_ift() {
    let mk = |id: &str, p: &str, qs: &[f64]| Thread {
        prompt_id: id.into(),
        prompt: p.into(),
        answers: qs
            .iter()
            .enumerate()
            .map(|(i, q)| Answer {
                id: format!("{id}-{i}"),
                text: format!("answer {i} to {p}"),
                rank: None,
                quality: Some(*q),
            })
            .collect(),
    };
    let eft = vec![mk("a", "A?", &[0.9, 0.2]), mk("b", "B?", &[0.5, 1.0, 0.0])];
    let ift = vec![
        Thread {
            prompt_id: "x".into(),
            prompt: "a?".into(), // same prompt as EFT thread a, up to case
            answers: vec![Answer {
                id: "x0".into(),
                text: "t".into(),
                rank: Some(0),
                quality: None,
            }],
        },
        Thread {
            prompt_id: "y".into(),
            prompt: "Y?".into(),
            answers: vec![Answer {
                id: "y0".into(),
                text: "t".into(),
                rank: Some(0),
                quality: None,
            }],
        },
    ];
    let out = build(
        &ift,
        &eft,
        &params(EftFrom::Human),
        &|i, r| format!("{i}|{r}"),
        None,
    )
    .unwrap();
    assert_eq!(out.metrics.ift_dropped_overlap, 1);
    assert_eq!(out.ift.len(), 1);
    assert_eq!(out.metrics.eval_threads, 1);
    assert_eq!(out.metrics.eft_threads, 1);
    assert_eq!(out.eval.len() + out.eft.len(), 5);
    let eval_prompt = &out.eval[0].prompt;
    assert!(out
        .eft
        .iter()
        .all(|e| !e.prompt.starts_with(eval_prompt.as_str())));
    for e in &out.eft {
        assert!(e.response.ends_with(&format!("Score: {}", e.score)));
    }
}

#[test]
fn one_prompt_stays_in_one_split_and_every_rank0_answer_is_ift() {
    let scored = |id: &str, p: &str| Thread {
        prompt_id: id.into(),
        prompt: p.into(),
        answers: (0..2)
            .map(|i| Answer {
                id: format!("{id}-{i}"),
                text: format!("{id} answer {i}"),
                rank: None,
                quality: Some(i as f64 / 2.0),
            })
            .collect(),
    };
    // "Same  question?" and "same question?" are one prompt asked in two threads
    let mut eft: Vec<Thread> = (0..20)
        .map(|i| scored(&format!("t{i}"), &format!("Q{i}?")))
        .collect();
    eft.push(scored("dup1", "Same  question?"));
    eft.push(scored("dup2", "same question?"));
    let ranked = |q: &str, texts: &[&str]| Thread {
        prompt_id: q.into(),
        prompt: q.into(),
        answers: texts
            .iter()
            .enumerate()
            .map(|(i, t)| Answer {
                id: format!("{q}{i}"),
                text: t.to_string(),
                // two rank-0 answers: the question was asked in two trees
                rank: Some(if i < 2 { 0 } else { 1 }),
                quality: None,
            })
            .collect(),
    };
    let ift = vec![ranked("hello", &["hi", "hello!", "hey"])];
    for seed in 0..16 {
        let mut p = params(EftFrom::Human);
        p.eval_fraction = EVAL_FRACTION;
        p.seed = seed;
        let out = build(&ift, &eft, &p, &|i, r| format!("{i}|{r}"), None).unwrap();
        // 21 prompts: round(0.23 · 21) = 5 held out
        assert_eq!((out.metrics.eval_prompts, out.metrics.eft_prompts), (5, 16));
        let in_eval = out
            .eval
            .iter()
            .filter(|r| r.prompt_id.starts_with("dup"))
            .count();
        let in_train = out.eft.iter().filter(|r| r.prompt.contains("dup")).count();
        assert!(in_eval == 0 || in_train == 0, "seed {seed}: split across");
        assert_eq!(in_eval + in_train, 4);
        let texts: Vec<&str> = out.ift.iter().map(|r| r.response.as_str()).collect();
        assert_eq!(texts, ["hi", "hello!"]);
    }
}

#[test]
fn model_eft_keeps_agreeing_threads_or_says_why() {
    let t = Thread {
        prompt_id: "a".into(),
        prompt: "A?".into(),
        answers: vec![
            Answer {
                id: "1".into(),
                text: "good".into(),
                rank: None,
                quality: Some(0.9),
            },
            Answer {
                id: "2".into(),
                text: "bad".into(),
                rank: None,
                quality: Some(0.1),
            },
        ],
    };
    let mut p = params(EftFrom::Model);
    p.eval_fraction = 0.0;
    let mut agreeing = |_: &str, r: &str| {
        let s = if r == "good" { 4.0 } else { 1.0 };
        (format!("ok\nScore: {s}"), Some(s))
    };
    let out = build(
        &[],
        std::slice::from_ref(&t),
        &p,
        &|i, r| format!("{i}|{r}"),
        Some(&mut agreeing),
    )
    .unwrap();
    assert_eq!(out.eft.len(), 2);
    let mut mute = |_: &str, _: &str| ("Huh?".to_string(), None);
    let e = build(&[], &[t], &p, &|i, r| format!("{i}|{r}"), Some(&mut mute))
        .err()
        .expect("no agreeing thread");
    assert!(e.to_string().contains("--eft-from human"));
}

#[test]
fn human_judgement_ends_with_score() {
    for s in 0..=5 {
        assert!(human_judgement(s).ends_with(&format!("\nScore: {s}")));
    }
}
