//! Training side of the engine, end to end: `srlm logprob` through the real binary, checkpoint
//! round trips (full and LoRA), byte-identical training runs, DPO learning on a fixed pair,
//! and — when the default model is present — f32-vs-quantized logits and one real DPO step.
mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use srlm::engine::checkpoint::{self, CheckpointError, Contents, Loaded};
use srlm::engine::llama::{Llama, Trainable};
use srlm::engine::logprob::Encoded;
use srlm::engine::lora::LoraConfig;
use srlm::engine::train::{self, DpoParams, DpoRow, SftParams, SftRow, TrainParams};
use srlm::engine::weights::Weights;

fn tiny_model(dir: &Path, seed: u64) -> std::path::PathBuf {
    let p = dir.join(format!("tiny-{seed}"));
    srlm::engine::fixture::write_tiny_model(&p, seed).expect("tiny model fixture");
    p
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn sft_rows() -> Vec<SftRow> {
    [
        ("What is 2+2?", "4"),
        ("Name a colour.", "Blue."),
        ("Say hi.", "Hi there!"),
    ]
    .iter()
    .map(|(p, r)| SftRow {
        prompt: p.to_string(),
        response: r.to_string(),
    })
    .collect()
}

fn logits(cfg: &srlm::engine::config::ModelConfig, w: &Weights) -> Tensor {
    let ids = Tensor::new(&[[1u32, 5, 9, 14, 3, 7]], &Device::Cpu).unwrap();
    Llama::new(cfg, w, &Trainable::None)
        .unwrap()
        .forward(&ids)
        .unwrap()
}

/// `srlm logprob --model MODEL --prompt P --response R [--json]`, which must succeed: its stdout.
fn logprob_cli(model: &Path, prompt: &str, response: &str, json: bool) -> String {
    let mut cmd = common::srlm();
    cmd.args(["logprob", "--model"])
        .arg(model)
        .args(["--prompt", prompt, "--response", response]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `--json` output of [`logprob_cli`].
fn logprob_json(model: &Path, prompt: &str, response: &str) -> serde_json::Value {
    serde_json::from_str(&logprob_cli(model, prompt, response, true)).unwrap()
}

#[test]
fn logprob_cli_reports_the_dpo_quantity() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), 1);
    let v = logprob_json(&model, "What is the capital of France?", "Paris.");
    let tokens = v["tokens"].as_array().unwrap();
    assert!(!tokens.is_empty());
    let sum: f64 = tokens.iter().map(|t| t["logprob"].as_f64().unwrap()).sum();
    assert!((sum - v["logprob"].as_f64().unwrap()).abs() < 1e-3);
    assert!(tokens.iter().all(|t| t["logprob"].as_f64().unwrap() <= 0.0));
    // The same number as the candle model's log-prob of that response (the CLI computes it
    // on the dense trainer's model: two implementations agree).
    let (loaded, enc) = train::load_for_training(&model).unwrap();
    let m = Llama::new(&loaded.cfg, &loaded.weights, &Trainable::None).unwrap();
    let ex = enc
        .encode("What is the capital of France?", "Paris.")
        .unwrap();
    let lib: f32 = srlm::engine::logprob::response_token_logprobs(&m, &ex)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        (lib as f64 - sum).abs() < 1e-3,
        "cli {sum} vs library {lib}"
    );
    assert_eq!(tokens.len(), ex.response_len());

    assert!(logprob_cli(&model, "Hi", "Hello", false).contains("response tokens"));
}

#[test]
fn logprob_cli_names_a_missing_model() {
    let out = common::srlm()
        .args([
            "logprob",
            "--model",
            "/nonexistent/model.gguf",
            "--prompt",
            "a",
            "--response",
            "b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model.gguf"));
}

#[test]
fn full_checkpoint_round_trip_and_deterministic_training() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_model(dir.path(), 2);
    let (loaded, enc) = train::load_for_training(&base).unwrap();
    let params = SftParams {
        train: TrainParams {
            lr: 1e-3,
            grad_accum: 2,
            seed: 5,
            ..TrainParams::default()
        },
    };
    let save = |name: &str| {
        let (t, m) = train::sft(
            &loaded.cfg,
            loaded.weights.clone(),
            &enc,
            &sft_rows(),
            &params,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(m.steps, 2);
        let out = dir.path().join(name);
        let w = t.merged().unwrap();
        checkpoint::save(
            &out,
            &loaded.cfg,
            Contents::Full(&w),
            &loaded.tokenizer,
            Some(&loaded.chat),
        )
        .unwrap();
        (out, w)
    };
    let (a, wa) = save("a");
    let (b, _) = save("b");
    // Two identical runs: byte-identical checkpoints.
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
    assert_eq!(
        checkpoint::model_id(&a).unwrap(),
        checkpoint::model_id(&b).unwrap()
    );
    // Training moved the weights, and the checkpoint loads back to the same model.
    let back = checkpoint::load(&a).unwrap();
    assert!(
        max_diff(
            &logits(&loaded.cfg, &loaded.weights),
            &logits(&back.cfg, &back.weights)
        ) > 1e-6
    );
    assert_eq!(
        max_diff(&logits(&loaded.cfg, &wa), &logits(&back.cfg, &back.weights)),
        0.0
    );
    assert_eq!(back.meta.unwrap().kind, checkpoint::Kind::Full);
    assert_eq!(back.chat, loaded.chat);
    // The inference loader reads it too (template from tokenizer_config.json).
    let m = srlm::engine::model::load(&a, srlm::engine::model::WeightMode::default()).unwrap();
    assert_eq!(
        m.encode("hello").unwrap(),
        enc.tokenizer.encode("hello", false).unwrap().get_ids()
    );
    // It is loadable on its own by the CLI too, and saving never overwrites.
    let err = checkpoint::save(
        &a,
        &loaded.cfg,
        Contents::Full(&wa),
        &loaded.tokenizer,
        None,
    );
    assert!(matches!(err, Err(CheckpointError::Exists(_))));
    logprob_cli(&a, "x", "y", false);
}

#[test]
fn lora_checkpoint_round_trip_checks_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_model(dir.path(), 3);
    let (loaded, enc) = train::load_for_training(&base).unwrap();
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into(), "up_proj".into()],
    };
    let params = SftParams {
        train: TrainParams {
            lr: 1e-2,
            grad_accum: 1,
            lora: Some(lora.clone()),
            ..TrainParams::default()
        },
    };
    let (t, _) = train::sft(
        &loaded.cfg,
        loaded.weights.clone(),
        &enc,
        &sft_rows(),
        &params,
        &mut |_| {},
    )
    .unwrap();
    let out = dir.path().join("adapter");
    t.save(&out, &loaded, &base).unwrap();
    assert!(out.join("adapter.safetensors").exists() && !out.join("model.safetensors").exists());
    let back = checkpoint::load(&out).unwrap();
    let merged = t.merged().unwrap();
    assert!(
        max_diff(
            &logits(&back.cfg, &back.weights),
            &logits(&loaded.cfg, &merged)
        ) < 1e-5
    );
    assert!(
        max_diff(
            &logits(&back.cfg, &back.weights),
            &logits(&loaded.cfg, &loaded.weights)
        ) > 1e-6
    );
    // The inference engine loads the adapter checkpoint too (base + adapter, merged): its
    // next-token logits equal the trainable model's on the merged weights.
    let m = srlm::engine::model::load(&out, srlm::engine::model::WeightMode::F32).unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 14, 3, 7]], &Device::Cpu).unwrap();
    let mut cache = srlm::engine::model::KvCache::new(&m);
    let ours: Vec<f32> = m
        .forward(&ids, &mut cache)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: Vec<f32> = logits(&back.cfg, &back.weights)
        .squeeze(0)
        .unwrap()
        .get(5)
        .unwrap()
        .to_vec1()
        .unwrap();
    let d = ours
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-3, "adapter checkpoint logits differ by {d}");
    let gen = common::srlm()
        .args([
            "generate",
            "-q",
            "--temperature",
            "0",
            "--max-tokens",
            "3",
            "--prompt",
            "hi",
            "--model",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    // Changing the base model is detected, not silently merged.
    let st = base.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x40;
    std::fs::write(&st, bytes).unwrap();
    assert!(matches!(
        checkpoint::load(&out),
        Err(CheckpointError::BaseMismatch { .. })
    ));
}

#[test]
fn dpo_on_text_pairs_learns_the_preference() {
    let dir = tempfile::tempdir().unwrap();
    let base = tiny_model(dir.path(), 4);
    let (loaded, enc) = train::load_for_training(&base).unwrap();
    let rows = vec![DpoRow {
        prompt: "Is the sky blue?".into(),
        chosen: "Yes, on a clear day.".into(),
        rejected: "Huh?".into(),
    }];
    let params = DpoParams {
        train: TrainParams {
            lr: 1e-3,
            grad_accum: 1,
            epochs: 6,
            ..TrainParams::default()
        },
        beta: 0.1,
    };
    let mut reports = vec![];
    let (_, m) = train::dpo(
        &loaded.cfg,
        loaded.weights.clone(),
        None,
        &enc,
        &rows,
        &params,
        &mut |r| reports.push(r.clone()),
    )
    .unwrap();
    assert_eq!(reports.len(), 6);
    assert!((reports[0].loss - std::f64::consts::LN_2).abs() < 1e-3);
    assert!(
        m.final_loss < reports[0].loss - 0.05,
        "loss did not fall: {:?}",
        reports.iter().map(|r| r.loss).collect::<Vec<_>>()
    );
    assert_eq!(reports.last().unwrap().reward_accuracy, Some(1.0));
}

// ---- with the real model (skipped when absent) ----

#[test]
fn real_model_f32_logits_match_quantized() {
    let Some(path) = common::default_model() else {
        return;
    };
    let (cfg, w) = Weights::load_gguf(&path).unwrap();
    // "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n" in SmolLM2 ids would do; any ids work.
    let ids: Vec<u32> = vec![
        1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
    ];
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ours = Llama::new(&cfg, &w, &Trainable::None)
        .unwrap()
        .forward(&input)
        .unwrap();
    let last: Vec<f32> = ours
        .squeeze(0)
        .unwrap()
        .get(ids.len() - 1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    let mut q = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content,
        &mut f,
        &Device::Cpu,
    )
    .unwrap();
    let want: Vec<f32> = q
        .forward(&input, 0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let diff = want
        .iter()
        .zip(&last)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    eprintln!("max |f32 - quantized| logit difference: {diff}");
    assert!(
        diff < 1.0,
        "f32 and quantized logits differ by {diff} (q/k permutation?)"
    );
    assert_eq!(argmax(&want), argmax(&last));
}

/// One DPO pair on the real model: the model loaded for training, the encoded pair, its
/// reference log-probs, and parameters for one full-fine-tuning step.
type RealDpo = (Loaded, Vec<(Encoded, Encoded)>, Vec<(f64, f64)>, DpoParams);

fn real_dpo(path: &Path, prompt: &str, chosen: &str, rejected: &str) -> RealDpo {
    let (loaded, enc) = train::load_for_training(path).unwrap();
    let pairs = vec![(
        enc.encode(prompt, chosen).unwrap(),
        enc.encode(prompt, rejected).unwrap(),
    )];
    let refs = train::reference_logprobs(&loaded.cfg, &loaded.weights, &pairs).unwrap();
    let params = DpoParams {
        train: TrainParams {
            lr: 1e-5,
            grad_accum: 1,
            ..TrainParams::default()
        },
        beta: 0.1,
    };
    (loaded, pairs, refs, params)
}

#[test]
fn real_model_one_dpo_step_lowers_the_loss() {
    let Some(path) = common::default_model() else {
        return;
    };
    let (loaded, pairs, refs, params) = real_dpo(
        &path,
        "What is the capital of France?",
        "The capital of France is Paris.",
        "I like turtles.",
    );
    let (t, m) = train::dpo_encoded(
        &loaded.cfg,
        loaded.weights.clone(),
        &pairs,
        &refs,
        &params,
        &mut |_| {},
    )
    .unwrap();
    assert!(
        (m.first_loss - std::f64::consts::LN_2).abs() < 1e-3,
        "first loss {}",
        m.first_loss
    );
    // Scored by the candle model (not the dense trainer that took the step).
    let model = Llama::new(&loaded.cfg, &t.merged().unwrap(), &Trainable::None).unwrap();
    let (after, margin) = train::dpo_loss(&model, &pairs[0].0, &pairs[0].1, refs[0], 0.1).unwrap();
    let after = after.to_scalar::<f32>().unwrap() as f64;
    eprintln!("DPO loss {} -> {after} (margin {margin})", m.first_loss);
    assert!(
        after < m.first_loss,
        "loss {after} after one step, {} before",
        m.first_loss
    );
}

/// Full DPO on the real model (matrices large enough for gemm to split them across threads)
/// gives the same weights on one thread and on two: what lets `reproduce` check bytes.
#[test]
fn real_model_dpo_is_thread_count_independent() {
    let Some(path) = common::default_model() else {
        return;
    };
    let (loaded, pairs, refs, params) = real_dpo(
        &path,
        "Name a colour.",
        "Blue is a colour of the sky.",
        "Seven.",
    );
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (t, _) = train::dpo_encoded(
                &loaded.cfg,
                loaded.weights.clone(),
                &pairs,
                &refs,
                &params,
                &mut |_| {},
            )
            .unwrap();
            t.merged()
                .unwrap()
                .safetensors_bytes(Path::new("mem"))
                .unwrap()
        })
    };
    let (one, two) = (run(1), run(2));
    assert!(one == two, "1 and 2 threads gave different weights");
    assert!(one != loaded.weights.safetensors_bytes(Path::new("mem")).unwrap());
}

#[test]
fn real_model_logprob_cli() {
    let Some(path) = common::default_model() else {
        return;
    };
    let v = logprob_json(&path, "What is the capital of France?", "Paris");
    let toks = v["tokens"].as_array().unwrap();
    // "Paris", then the end of the turn: <|im_end|> (id 2) and "\n".
    let ids: Vec<u64> = toks.iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(ids[ids.len() - 2..], [2, 198]);
    assert_eq!(toks[0]["text"], "Paris");
    let lp = v["logprob"].as_f64().unwrap();
    assert!(lp < 0.0 && lp > -30.0, "logprob {lp}");
    // A sensible answer is likelier than nonsense.
    let bv = logprob_json(&path, "What is the capital of France?", "Turtle soup");
    assert!(bv["logprob"].as_f64().unwrap() < lp);
}
