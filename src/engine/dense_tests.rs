//! Tests of `engine::dense` (kept beside it, out of its file).
use super::*;
use crate::engine::llama::tests::tiny;
use crate::engine::llama::{Llama, Trainable};
use crate::engine::logprob::batch_response_logprobs;

/// A pair of different lengths with a repeated token (the embedding gradient sums rows).
fn pair() -> (Encoded, Encoded) {
    (
        Encoded {
            ids: vec![1, 7, 8, 9, 30, 31, 7, 32, 2],
            start: 4,
        },
        Encoded {
            ids: vec![1, 7, 8, 9, 50, 51, 2],
            start: 4,
        },
    )
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

/// Log-probs and every parameter's gradient of `Σ coef · log-prob` agree with candle's
/// autograd over the reference model.
/// With `lora`, only the adapters are trained, on both sides.
/// Qwen2's q/k/v biases and Llama 3's rope scaling, full and LoRA: the dense trainer's
/// log-probs and gradients equal candle's autograd over the graph model.
#[test]
fn families_match_the_graph_full_and_lora() {
    for name in ["qwen2-untied", "qwen2-tied", "llama3"] {
        let l = crate::engine::checkpoint::load(&crate::engine::families::fixture(name)).unwrap();
        check_against_graph(&l.cfg, &l.weights, None);
        check_against_graph(&l.cfg, &l.weights, Some(LoraConfig::default()));
    }
}

fn check_against_graph(cfg: &ModelConfig, w: &Weights, lora: Option<LoraConfig>) {
    let (c, r) = pair();
    let init = LoraInit { seed: 5 };
    let dense = Dense::new(cfg, w, lora.as_ref().map(|l| (l, init))).unwrap();
    let (lp, tape) = dense.forward(&[&c, &r], true).unwrap();
    let trainable = match lora {
        Some(l) => Trainable::Lora(l, init),
        None => Trainable::All,
    };
    let graph = Llama::new(cfg, w, &trainable).unwrap();
    let want = batch_response_logprobs(&graph, &[&c, &r]).unwrap();
    let coef: Vec<Vec<f32>> = lp
        .iter()
        .enumerate()
        .map(|(s, v)| {
            (0..v.len())
                .map(|i| 0.3 + 0.1 * i as f32 - 0.7 * s as f32)
                .collect()
        })
        .collect();
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (s, t) in want.iter().enumerate() {
        let got: Vec<f32> = t.to_vec1().unwrap();
        let d = max_rel_diff(&lp[s], &got);
        assert!(d < 1e-5, "sequence {s}: log-probs differ by {d}");
        let k = Tensor::new(coef[s].as_slice(), &Device::Cpu).unwrap();
        loss = (loss + (t * k).unwrap().sum_all().unwrap()).unwrap();
    }
    let grads = loss.backward().unwrap();
    let mut ours: Vec<Vec<f32>> = dense.sizes().iter().map(|&n| vec![0.0; n]).collect();
    dense.backward(tape.unwrap(), &coef, &mut ours);
    let trained: Vec<_> = dense
        .names()
        .iter()
        .zip(&ours)
        .filter(|(_, g)| !g.is_empty())
        .collect();
    assert_eq!(trained.len(), graph.params.len());
    for (name, g) in trained {
        let want: Vec<f32> = grads
            .get(graph.params[name].as_tensor())
            .unwrap_or_else(|| panic!("candle gives {name} no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let d = max_rel_diff(g, &want);
        assert!(d < 1e-4, "{name}: gradients differ by {d} (relative)");
        // LoRA's A starts with a zero gradient (B is zero); everything else moves.
        if !name.contains("lora_A") {
            assert!(g.iter().any(|&v| v != 0.0), "{name}: zero gradient");
        }
    }
}

#[test]
fn logprobs_and_gradients_match_candle_autograd() {
    let (cfg, w) = tiny(31);
    check_against_graph(&cfg, &w, None);
}

#[test]
fn untied_lm_head_matches_candle_autograd() {
    let (mut cfg, mut w) = tiny(32);
    cfg.tie_word_embeddings = false;
    let head = (w.get("model.embed_tokens.weight").unwrap() * 0.7).unwrap();
    w.0.insert(
        "lm_head.weight".into(),
        head.flip(&[0]).unwrap().contiguous().unwrap(),
    );
    check_against_graph(&cfg, &w, None);
}

#[test]
fn lora_gradients_match_candle_autograd() {
    let (cfg, w) = tiny(35);
    let lora = LoraConfig {
        rank: 2,
        alpha: 3.0,
        targets: ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
            .map(String::from)
            .to_vec(),
    };
    check_against_graph(&cfg, &w, Some(lora.clone()));
    // The adapters start at B = 0: the merged weights are the base's.
    let dense = Dense::new(&cfg, &w, Some((&lora, LoraInit { seed: 1 }))).unwrap();
    assert_eq!(
        dense.adapter().unwrap().0.len(),
        2 * 5 * cfg.num_hidden_layers
    );
    let merged = dense.weights().unwrap();
    for (name, t) in &w.0 {
        let d = crate::engine::llama::tests::max_abs_diff(merged.get(name).unwrap(), t);
        assert_eq!(d, 0.0, "{name}");
    }
    let head = LoraConfig {
        targets: vec!["lm_head".into()],
        ..lora
    };
    assert!(!Dense::supports(&head));
    assert!(matches!(
        Dense::new(&cfg, &w, Some((&head, LoraInit { seed: 1 }))),
        Err(DenseError::Unsupported(_))
    ));
}

#[test]
fn gradients_do_not_depend_on_thread_count() {
    let (cfg, w) = tiny(33);
    let dense = Dense::new(&cfg, &w, None).unwrap();
    let (c, r) = pair();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (lp, tape) = dense.forward(&[&c, &r], true).unwrap();
            let coef: Vec<Vec<f32>> = lp.iter().map(|v| vec![0.5; v.len()]).collect();
            let mut g: Vec<Vec<f32>> = dense.sizes().iter().map(|&n| vec![0.0; n]).collect();
            dense.backward(tape.unwrap(), &coef, &mut g);
            (lp, g)
        })
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.0, b.0);
    assert!(a.1 == b.1, "gradients differ between 1 and 3 threads");
}

#[test]
fn bad_sequences_are_refused_by_index() {
    let (cfg, w) = tiny(34);
    let dense = Dense::new(&cfg, &w, None).unwrap();
    let (c, _) = pair();
    let outside = Encoded {
        ids: vec![1, 2, 64],
        start: 2,
    };
    let err = dense.forward(&[&c, &outside], false).err().unwrap();
    assert!(matches!(err, DenseError::Sequence { seq: 1, .. }), "{err}");
    assert!(err.to_string().contains("token id 64"), "{err}");
    let no_response = Encoded {
        ids: vec![1, 2],
        start: 2,
    };
    assert!(matches!(
        dense.check(&no_response),
        Err(LogprobError::EmptyResponse)
    ));
    let mut short = w.clone();
    short.0.remove("model.layers.1.mlp.up_proj.weight");
    assert!(matches!(
        Dense::new(&cfg, &short, None),
        Err(DenseError::Missing(n)) if n == "model.layers.1.mlp.up_proj.weight"
    ));
}

#[test]
fn taking_the_weights_builds_the_same_model() {
    let (cfg, w) = tiny(36);
    let lora = LoraConfig::default();
    for adapters in [None, Some((&lora, LoraInit { seed: 2 }))] {
        let a = Dense::new(&cfg, &w, adapters).unwrap();
        let b = Dense::from_weights(&cfg, w.clone(), adapters).unwrap();
        assert_eq!(a.names, b.names);
        assert!(a.params == b.params, "parameters differ");
        assert_eq!(a.trained, b.trained);
    }
    let mut short = w.clone();
    short.0.remove("model.norm.weight");
    assert!(matches!(
        Dense::from_weights(&cfg, short, None),
        Err(DenseError::Missing(n)) if n == "model.norm.weight"
    ));
}
