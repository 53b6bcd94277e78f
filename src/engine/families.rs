//! Tests of each supported family against transformers, on the tiny random-weight models that
//! `tests/fixtures/make_fixtures.py` saved with transformers' own f32 logits, log-probs and a
//! DPO pair's loss and gradients (Llama 3 with `llama3` rope scaling, untied, bf16; Qwen2
//! tied f32 and untied f16 sharded, with q/k/v biases; Mistral bf16 sharded). Also the
//! `smollm2-hf` case: the default GGUF as a Hugging Face folder scores like the GGUF.
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::checkpoint;
use super::dense::Dense;
use super::llama::{Llama, Trainable};
use super::logprob::Encoded;
use super::model::{load, KvCache, WeightMode};
use super::train::Objective;

pub(crate) const FAMILIES: [&str; 4] = ["llama3", "qwen2-tied", "qwen2-untied", "mistral"];

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

#[derive(Deserialize)]
struct Dpo {
    chosen: Vec<u32>,
    rejected: Vec<u32>,
    start: usize,
    beta: f64,
    reference: (f64, f64),
    loss: f64,
    policy: (f64, f64),
    grads: std::collections::BTreeMap<String, Vec<f32>>,
}

#[derive(Deserialize)]
struct Expected {
    ids: Vec<u32>,
    start: usize,
    logits: Vec<Vec<f32>>,
    response_token_logprobs: Vec<f32>,
    response_logprob: f64,
    dpo: Dpo,
}

fn expected(name: &str) -> Expected {
    let p = fixture(name).join("expected.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// Largest difference relative to the largest expected magnitude.
fn rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max)
        / scale
}

const TOL: f32 = 1e-4;

#[test]
fn every_family_matches_transformers_logits_and_logprobs() {
    for name in FAMILIES {
        let e = expected(name);
        let loaded = checkpoint::load(&fixture(name)).unwrap();
        // The graph model: logits at every position.
        let m = Llama::new(&loaded.cfg, &loaded.weights, &Trainable::None).unwrap();
        let input = Tensor::new(&e.ids[..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let all: Vec<Vec<f32>> = m
            .forward(&input)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (i, (g, w)) in all.iter().zip(&e.logits).enumerate() {
            let r = rel(g, w);
            assert!(r < TOL, "{name}: graph logits at {i} off by {r}");
        }
        // The dense trainer's log-probs.
        let d = Dense::new(&loaded.cfg, &loaded.weights, None).unwrap();
        let ex = Encoded {
            ids: e.ids.clone(),
            start: e.start,
        };
        let (lp, _) = d.forward(&[&ex], false).unwrap();
        let r = rel(&lp[0], &e.response_token_logprobs);
        assert!(r < TOL, "{name}: dense log-probs off by {r}");
        eprintln!("{name}: dense log-probs within {r:.1e} of transformers");
        let sum: f64 = lp[0].iter().map(|&x| x as f64).sum();
        assert!(
            ((sum - e.response_logprob) / e.response_logprob).abs() < TOL as f64,
            "{name}: response log-prob {sum} vs {}",
            e.response_logprob
        );
        // The inference model, f32: prefill then token by token through the cache.
        let model = load(&fixture(name), WeightMode::F32).unwrap();
        let mut cache = KvCache::new(&model);
        let mut worst = 0f32;
        let k = 5;
        let head = Tensor::new(&e.ids[..k], model.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let out: Vec<f32> = model
            .forward(&head, &mut cache)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let r = rel(&out, &e.logits[k - 1]);
        assert!(r < TOL, "{name}: inference prefill logits off by {r}");
        for (i, &id) in e.ids.iter().enumerate().skip(k) {
            let t = Tensor::new(&[[id]], model.device()).unwrap();
            let out: Vec<f32> = model
                .forward(&t, &mut cache)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let r = rel(&out, &e.logits[i]);
            assert!(r < TOL, "{name}: inference logits at {i} off by {r}");
            worst = worst.max(r);
        }
        eprintln!("{name}: inference logits within {worst:.1e} of transformers");
        // The quantized fast path stays close (q8_0: a fraction of a logit).
        let q = load(&fixture(name), WeightMode::Q8_0).unwrap();
        let all = Tensor::new(&e.ids[..], q.device())
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let out: Vec<f32> = q
            .forward(&all, &mut KvCache::new(&q))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let r = rel(&out, e.logits.last().unwrap());
        assert!(r < 0.05, "{name}: q8_0 logits off by {r}");
    }
}

#[test]
fn dpo_loss_and_gradients_match_transformers() {
    for name in FAMILIES {
        let e = expected(name).dpo;
        let loaded = checkpoint::load(&fixture(name)).unwrap();
        let d = Dense::new(&loaded.cfg, &loaded.weights, None).unwrap();
        let (c, r) = (
            Encoded {
                ids: e.chosen.clone(),
                start: e.start,
            },
            Encoded {
                ids: e.rejected.clone(),
                start: e.start,
            },
        );
        let obj = Objective::Dpo {
            chosen: &c,
            rejected: &r,
            reference: e.reference,
            beta: e.beta,
        };
        let (lp, tape) = d.forward(&obj.seqs(), true).unwrap();
        let (loss, _, dlp) = obj.loss(&lp, 1);
        let sums: Vec<f64> = lp
            .iter()
            .map(|v| v.iter().map(|&x| x as f64).sum())
            .collect();
        for (got, want) in sums.iter().zip([e.policy.0, e.policy.1]) {
            assert!(
                ((got - want) / want).abs() < 1e-4,
                "{name}: policy {got} vs {want}"
            );
        }
        assert!(
            ((loss - e.loss) / e.loss).abs() < 1e-4,
            "{name}: loss {loss} vs {}",
            e.loss
        );
        let mut grads: Vec<Vec<f32>> = d.sizes().into_iter().map(|n| vec![0f32; n]).collect();
        d.backward(tape.unwrap(), &dlp, &mut grads);
        assert!(!e.grads.is_empty());
        for (pname, want) in &e.grads {
            let i = d
                .names()
                .iter()
                .position(|n| n == pname)
                .unwrap_or_else(|| panic!("{name}: {pname}"));
            let got = &grads[i][..want.len()];
            let r = rel(got, want);
            assert!(r < TOL, "{name}: gradient of {pname} off by {r}");
            eprintln!("{name}: gradient of {pname} within {r:.1e}");
        }
    }
}

/// The issue's `smollm2-hf` case: the default GGUF written as a Hugging Face folder the way
/// current transformers writes one (template in `chat_template.jinja`, none in
/// `tokenizer_config.json`) keeps its system message and scores as the GGUF does.
#[test]
fn smollm2_hf_folder_scores_like_its_gguf() {
    let gguf = super::model::default_model_path();
    if !gguf.exists() {
        assert!(
            std::env::var_os("SRLM_REQUIRE_MODEL").is_none(),
            "default model {} is absent",
            gguf.display()
        );
        eprintln!("SKIP: default model {} is absent", gguf.display());
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("smollm2-hf");
    let loaded = checkpoint::load(&gguf).unwrap();
    super::export::write_hf(&loaded, &dir).unwrap();
    let tc = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
    assert!(!tc.contains("chat_template"), "{tc}");
    let (prompt, response) = ("What is 2+2?", "2+2 equals 4.");
    let mut scores = vec![];
    for path in [&gguf, &dir] {
        let (l, enc) = super::train::load_for_training(path).unwrap();
        let d = Dense::new(&l.cfg, &l.weights, None).unwrap();
        scores.push(super::logprob::score(&d, &enc, prompt, response).unwrap());
    }
    assert_eq!(
        scores[0].prompt_tokens, 37,
        "the GGUF's template keeps its system message"
    );
    assert_eq!(
        scores[1].prompt_tokens, 37,
        "the folder's template keeps its system message"
    );
    let (a, b) = (scores[0].sum, scores[1].sum);
    assert!((a - b).abs() < 1e-3, "GGUF {a}, folder {b}");
    // transformers gives -9.5583 on the same weights (the measurement).
    assert!((a + 9.5583).abs() < 2e-2, "GGUF log-prob {a}");
}

/// A Qwen2 model written as GGUF (`qwen2` architecture: q/k rows not interleaved, biases as
/// `blk.N.attn_q.bias`) runs on the inference path as its folder does; a Llama 3 model with
/// rope scaling is refused rather than written without it.
#[test]
fn qwen2_gguf_matches_transformers_and_llama3_scaling_is_not_dropped() {
    let t = tempfile::tempdir().unwrap();
    crate::engine::fixture::write_tiny_model(&t.path().join("tok"), 1).unwrap();
    let tok = checkpoint::load(&t.path().join("tok")).unwrap();
    let md = super::export::gguf_tokenizer(&tok.tokenizer, &tok.chat).unwrap();
    let name = "qwen2-untied";
    let e = expected(name);
    let l = checkpoint::load(&fixture(name)).unwrap();
    let path = t.path().join("qwen2.gguf");
    super::export::write_gguf(&l, &md, &path, candle_core::quantized::GgmlDType::F32).unwrap();
    let model = load(&path, WeightMode::F32).unwrap();
    let all = Tensor::new(&e.ids[..], model.device())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let out: Vec<f32> = model
        .forward(&all, &mut KvCache::new(&model))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let r = rel(&out, e.logits.last().unwrap());
    assert!(r < TOL, "qwen2 GGUF logits off by {r}");
    let back = checkpoint::load(&path).unwrap();
    assert!(back.cfg.qkv_bias());
    let d = Dense::new(&back.cfg, &back.weights, None).unwrap();
    let ex = Encoded {
        ids: e.ids.clone(),
        start: e.start,
    };
    let (lp, _) = d.forward(&[&ex], false).unwrap();
    let r = rel(&lp[0], &e.response_token_logprobs);
    assert!(r < TOL, "qwen2 GGUF log-probs off by {r}");
    let l3 = checkpoint::load(&fixture("llama3")).unwrap();
    let err = super::export::write_gguf(
        &l3,
        &md,
        &t.path().join("l3.gguf"),
        candle_core::quantized::GgmlDType::F32,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("llama3"), "{err}");
}
