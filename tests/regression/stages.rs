//! Issue 12: stages take the users' own inputs (a model outside the working directory, a
//! prompts file with only `prompt`), and a progress line never runs into an error.
use super::*;

/// `gen-responses` on the tiny model, `--n 1`, a few tokens; extra flags appended.
fn gen_responses(d: &Path, model: &str, prompts: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "gen-responses",
        "--model",
        model,
        "--prompts",
        prompts,
        "--n",
        "1",
        "--max-tokens",
        "4",
        "--json",
    ];
    args.extend_from_slice(extra);
    run(d, &args)
}

/// Issue 12: a model outside the working directory (a model cache, a shared disk) was refused
/// ("outside the store's working directory"). It is now an input recorded by absolute path and
/// id, not copied into the store unless asked (`--store-input`).
#[test]
fn issue12_a_model_outside_the_working_directory_is_a_stage_input() {
    let (t, d) = new_store();
    let model = t.path().canonicalize().unwrap().join("cache/tiny");
    srlm::engine::fixture::write_tiny_model(&model, 5).unwrap();
    write(&d, "p.jsonl", b"{\"prompt\":\"Say hi.\"}\n");
    let m = model.display().to_string();
    let o = gen_responses(&d, &m, "p.jsonl", &[]);
    assert!(o.status.success(), "{}", no_panic(&o, "gen-responses"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let inputs = v["record"]["inputs"].as_object().unwrap();
    let weights = &inputs["model/model.safetensors"];
    let path = model.join("model.safetensors").display().to_string();
    assert_eq!(weights["path"], path.as_str(), "{v:#}");
    assert_eq!(weights["external_path"], path.as_str(), "{v:#}");
    let id: srlm_store::ObjectId = weights["id"].as_str().unwrap().parse().unwrap();
    let has = |id| {
        srlm_store::Store::discover(&d)
            .unwrap()
            .has_object(&id)
            .unwrap()
    };
    assert!(!has(id), "not copied into the store");
    let o = gen_responses(&d, &m, "p.jsonl", &["--store-input", "--rerun"]);
    assert!(o.status.success(), "{}", no_panic(&o, "--store-input"));
    assert!(has(id), "--store-input copies it");
}

/// Issue 12: `gen-responses` refused prompts without `source` (`missing field source`); any
/// JSONL row with a `prompt` will do, an id optional, as the Python replications and TRL
/// write them.
#[test]
fn issue12_prompts_need_only_a_prompt() {
    let (_t, d) = new_store();
    srlm::engine::fixture::write_tiny_model(&d.join("base/tiny"), 5).unwrap();
    write(
        &d,
        "p.jsonl",
        b"{\"prompt_id\":\"a1\",\"prompt\":\"Say hi.\"}\n{\"prompt\":\"Count to two.\"}\n",
    );
    let o = gen_responses(&d, "base/tiny", "p.jsonl", &[]);
    assert!(o.status.success(), "{}", no_panic(&o, "gen-responses"));
    let rows = std::fs::read_to_string(d.join("gen/responses.jsonl")).unwrap();
    let ids: Vec<String> = rows
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt_id"].to_string())
        .collect();
    assert_eq!(ids, ["\"a1\"", "\"p00001\""]);
    if let Some(real) = common::shared_data("aift/mistral7b_m1_generated_prompts.jsonl") {
        // the replication's file (only `prompt`) is read: the first rows, as a user would cut it
        let text = std::fs::read_to_string(real).unwrap();
        let head: Vec<&str> = text.lines().take(1).collect();
        write(
            &d,
            "real.jsonl",
            format!("{}\n", head.join("\n")).as_bytes(),
        );
        let o = gen_responses(&d, "base/tiny", "real.jsonl", &["--out", "gen/real.jsonl"]);
        assert!(o.status.success(), "{}", no_panic(&o, "real prompts"));
    }
}

/// Issue 12: a stage's progress line was left on the terminal, and the error ran into it
/// (`hashing base/m.gguf (98.4 MB)error: …`). The line is cleared first. Needs a terminal:
/// run under `script` (util-linux); the transcript is replayed through a terminal emulator
/// (vt100) and the final screen is checked, as the user would see it.
#[test]
fn issue12_a_progress_line_is_cleared_before_an_error() {
    let has_script = Command::new("script")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_script {
        common::absent("SRLM_REQUIRE_SCRIPT", "`script` (util-linux) is absent");
        return;
    }
    let (t, d) = new_store();
    // not a model: the stage hashes it (a progress line), then fails to load it
    let bogus = t.path().canonicalize().unwrap().join("m.gguf");
    std::fs::write(&bogus, vec![1u8; 8 << 20]).unwrap();
    write(&d, "p.jsonl", b"{\"prompt\":\"hi\"}\n");
    let cmd = format!(
        "{} gen-responses --model {} --prompts p.jsonl",
        env!("CARGO_BIN_EXE_srlm"),
        bogus.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(&d)
        .env("SRLM_LOCK_TIMEOUT", "120")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("error:"), "no error in {out:?}");
    // What the user's terminal shows at the end: the error on a line of its own, and no
    // progress line left above it (a bar left drawn would still read "hashing …").
    let mut term = vt100::Parser::new(50, 200, 0);
    term.process(&o.stdout);
    let screen = term.screen().contents();
    let lines: Vec<&str> = screen.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("error:")),
        "the error is not on a line of its own: {screen:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("hashing")),
        "a progress line is left on the screen: {screen:?}"
    );
}

/// Session 6: a verb's own DIR argument (`init DIR`, `demo DIR`, `bench loop --dir DIR`) shared
/// its id with the global `-C DIR`, so a relative DIR was applied twice: `srlm init sub` made
/// the store in `sub/sub`.
#[test]
fn a_relative_dir_argument_is_applied_once() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().canonicalize().unwrap();
    ok(&d, &["init", "sub"]);
    assert!(d.join("sub/.srlm").is_dir(), "no store in sub/");
    assert!(!d.join("sub/sub").exists(), "the store went to sub/sub");
    // -C still works, and composes with the verb's own relative DIR once
    std::fs::create_dir_all(d.join("a")).unwrap();
    ok(&d, &["-C", "a", "init", "b"]);
    assert!(d.join("a/b/.srlm").is_dir(), "no store in a/b/");
}

/// Issue 15: `import oasst2` split EFT threads, not prompts, so a question asked in two threads
/// (the real file has one, up to case and spaces) could be trained on and evaluated on; and a
/// question with two rank-0 answers gave IFT only the first.
#[test]
fn issue15_a_prompt_asked_in_two_threads_stays_in_one_split_and_both_rank0_answers_are_ift() {
    let (_t, d) = new_store();
    let mut scored = String::new();
    let mut row = |id: &str, prompt: &str, i: usize| {
        let r = serde_json::json!({"prompt_id": id, "prompt_text": prompt,
            "response_id": format!("{id}-{i}"), "response_text": format!("{id} answer {i}"),
            "language": "en", "quality_score": i as f64 / 2.0});
        scored.push_str(&format!("{r}\n"));
    };
    for t in 0..12 {
        for i in 0..2 {
            row(&format!("t{t}"), &format!("Question {t}?"), i);
        }
    }
    for i in 0..2 {
        row("dup1", "The same  question?", i);
        row("dup2", "the same question?", i);
    }
    write(&d, "scored.jsonl", scored.as_bytes());
    let ranked: String = [
        ("hello", "hi", 0),
        ("hello", "hello!", 0),
        ("hello", "hey", 1),
    ]
    .iter()
    .map(|(q, a, r)| {
        format!(
            "{}\n",
            serde_json::json!({"question": q, "answer": a, "rank": r})
        )
    })
    .collect();
    write(&d, "ranked.jsonl", ranked.as_bytes());
    for seed in 0..6 {
        let s = seed.to_string();
        ok(
            &d,
            &[
                "import",
                "oasst2",
                "--ift",
                "ranked.jsonl",
                "--eft",
                "scored.jsonl",
                "--seed",
                &s,
            ],
        );
        let eval = std::fs::read_to_string(d.join("seed/eft_eval.jsonl")).unwrap();
        let eft = std::fs::read_to_string(d.join("seed/eft.jsonl")).unwrap();
        let (in_eval, in_train) = (eval.matches("dup").count(), eft.matches("dup").count());
        assert!(
            in_eval == 0 || in_train == 0,
            "seed {seed}: eval {in_eval}, train {in_train}"
        );
        let ift = std::fs::read_to_string(d.join("seed/ift.jsonl")).unwrap();
        assert!(
            ift.contains("\"hi\"") && ift.contains("\"hello!\"") && !ift.contains("hey"),
            "{ift}"
        );
    }
}
