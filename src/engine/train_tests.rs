//! Tests of `engine::train` (kept beside it, out of its file).
use super::*;
use crate::engine::llama::tests::max_abs_diff;
use crate::engine::llama::tests::tiny;
use candle_nn::Optimizer;

fn quiet() -> impl FnMut(&StepReport) {
    |_| {}
}

#[test]
fn adamw_matches_candle_nn() {
    let (cfg, w) = tiny(21);
    let p = TrainParams {
        lr: 1e-2,
        weight_decay: 0.1,
        ..TrainParams::default()
    };
    let ours = Llama::new(&cfg, &w, &Trainable::All).unwrap();
    let theirs = Llama::new(&cfg, &w, &Trainable::All).unwrap();
    let mut opt = AdamW::new(&ours.params, &p);
    let mut copt = candle_nn::AdamW::new(
        theirs.params.values().cloned().collect(),
        candle_nn::ParamsAdamW {
            lr: p.lr,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
        },
    )
    .unwrap();
    let ex = Encoded {
        ids: vec![1, 5, 9, 20, 33, 2],
        start: 3,
    };
    for _ in 0..3 {
        let g = sft_loss(&ours, &ex.ids, &ex.ids, ex.start)
            .unwrap()
            .backward()
            .unwrap();
        opt.accumulate(&g).unwrap();
        opt.step(p.lr).unwrap();
        let g = sft_loss(&theirs, &ex.ids, &ex.ids, ex.start)
            .unwrap()
            .backward()
            .unwrap();
        copt.step(&g).unwrap();
    }
    for (name, var) in &ours.params {
        let d: f32 = max_abs_diff(var.as_tensor(), theirs.params[name].as_tensor());
        assert!(d < 1e-5, "{name} differs by {d}");
    }
    // And the parameters moved.
    let e = "model.embed_tokens.weight";
    let d: f32 = max_abs_diff(ours.params[e].as_tensor(), w.get(e).unwrap());
    assert!(d > 1e-3);
}

/// Training on the dense model takes the same steps as candle's autograd over [`Llama`]
/// (DPO with accumulation, then SFT), full and LoRA.
#[test]
fn dense_training_matches_candle_autograd() {
    dense_matches_graph(None);
    dense_matches_graph(Some(LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: ["k_proj", "o_proj", "gate_proj", "down_proj"]
            .map(String::from)
            .to_vec(),
    }));
}

fn dense_matches_graph(lora: Option<LoraConfig>) {
    let (cfg, w) = tiny(26);
    let ex = |ids: &[u32]| Encoded {
        ids: ids.to_vec(),
        start: 3,
    };
    let pairs = vec![
        (ex(&[1, 7, 8, 30, 31, 2]), ex(&[1, 7, 8, 50, 2])),
        (
            ex(&[1, 9, 4, 12, 13, 14, 2]),
            ex(&[1, 9, 4, 40, 41, 42, 43, 2]),
        ),
    ];
    let refs = reference_logprobs(&cfg, &w, &pairs).unwrap();
    let p = TrainParams {
        lr: 1e-2,
        grad_accum: 2,
        epochs: 3,
        weight_decay: 0.1,
        lora: lora.clone(),
        ..TrainParams::default()
    };
    let trainable = match &lora {
        Some(lc) => Trainable::Lora(lc.clone(), LoraInit { seed: p.seed }),
        None => Trainable::All,
    };
    let dpo = |i: usize| Objective::Dpo {
        chosen: &pairs[i].0,
        rejected: &pairs[i].1,
        reference: refs[i],
        beta: 0.5,
    };
    let sft = |i: usize| Objective::Sft(&pairs[i].0);
    let compare = |dense: Weights, graph: Weights| {
        for (name, t) in &graph.0 {
            let d = max_abs_diff(dense.get(name).unwrap(), t);
            assert!(d < 1e-4, "{name} differs by {d}");
        }
        let moved = if lora.is_some() {
            "model.layers.1.self_attn.o_proj.weight"
        } else {
            "model.embed_tokens.weight"
        };
        assert!(max_abs_diff(graph.get(moved).unwrap(), w.get(moved).unwrap()) > 1e-4);
    };
    let (losses_d, losses_g) = (
        std::cell::RefCell::new(vec![]),
        std::cell::RefCell::new(vec![]),
    );
    let (dense, _) = fit(&cfg, w.clone(), &p, 2, dpo, &mut |r| {
        losses_d.borrow_mut().push(r.loss)
    })
    .unwrap();
    let model = Llama::new(&cfg, &w, &trainable).unwrap();
    run_loop(&mut GraphLearner::new(&model, &p, dpo), 2, &p, &mut |r| {
        losses_g.borrow_mut().push(r.loss)
    })
    .unwrap();
    compare(dense.merged().unwrap(), model.merged_weights().unwrap());
    for (a, b) in losses_d.borrow().iter().zip(losses_g.borrow().iter()) {
        assert!((a - b).abs() < 1e-5, "losses {a} vs {b}");
    }
    let (dense, _) = fit(&cfg, w.clone(), &p, 2, sft, &mut quiet()).unwrap();
    let model = Llama::new(&cfg, &w, &trainable).unwrap();
    run_loop(&mut GraphLearner::new(&model, &p, sft), 2, &p, &mut quiet()).unwrap();
    compare(dense.merged().unwrap(), model.merged_weights().unwrap());
}

#[test]
fn sft_masks_prompt_labels() {
    let (cfg, w) = tiny(22);
    let model = Llama::new(&cfg, &w, &Trainable::None).unwrap();
    let ids = [3u32, 14, 15, 9, 26, 53, 58, 9];
    let start = 4;
    let base: f32 = sft_loss(&model, &ids, &ids, start)
        .unwrap()
        .to_scalar()
        .unwrap();
    let mut labels = ids;
    labels[1] = 60;
    labels[3] = 0;
    let same: f32 = sft_loss(&model, &ids, &labels, start)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(base, same, "a prompt-position label changed the loss");
    labels[5] = 1;
    let changed: f32 = sft_loss(&model, &ids, &labels, start)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_ne!(base, changed, "a response label did not change the loss");
}

#[test]
fn dpo_loss_starts_at_ln2_and_falls() {
    let (cfg, w) = tiny(23);
    let pairs = vec![(
        Encoded {
            ids: vec![1, 7, 8, 9, 30, 31, 32, 2],
            start: 4,
        },
        Encoded {
            ids: vec![1, 7, 8, 9, 50, 51, 2],
            start: 4,
        },
    )];
    let refs = reference_logprobs(&cfg, &w, &pairs).unwrap();
    let params = DpoParams {
        train: TrainParams {
            lr: 1e-3,
            grad_accum: 1,
            epochs: 8,
            ..TrainParams::default()
        },
        beta: 0.1,
    };
    let mut losses = vec![];
    let (_, m) = dpo_encoded(&cfg, w.clone(), &pairs, &refs, &params, &mut |r| {
        losses.push(r.loss)
    })
    .unwrap();
    assert!(
        (losses[0] - std::f64::consts::LN_2).abs() < 1e-4,
        "first loss {}",
        losses[0]
    );
    assert!(
        m.final_loss < losses[0] - 0.05,
        "loss did not fall: {losses:?}"
    );
    assert_eq!(m.reward_accuracy.map(|a| a > 0.5), Some(true));
}

#[test]
fn training_is_deterministic_and_seed_dependent() {
    let (cfg, w) = tiny(24);
    let data: Vec<Encoded> = (0..5)
        .map(|i| Encoded {
            ids: vec![1, 2 + i, 3, 10 + i, 20 + 2 * i, 2],
            start: 3,
        })
        .collect();
    let run = |seed: u64, lora: bool| {
        let mut p = SftParams::default();
        p.train.lr = 1e-3;
        p.train.grad_accum = 2;
        p.train.seed = seed;
        if lora {
            p.train.lora = Some(LoraConfig::default());
        }
        let (t, _) = sft_encoded(&cfg, w.clone(), &data, &p, &mut quiet()).unwrap();
        t.merged()
            .unwrap()
            .safetensors_bytes(std::path::Path::new("mem"))
            .unwrap()
    };
    assert_eq!(run(7, false), run(7, false));
    assert_ne!(run(7, false), run(8, false));
    assert_eq!(run(7, true), run(7, true));
}

#[test]
fn lora_trains_only_adapters() {
    let (cfg, w) = tiny(25);
    let data = vec![Encoded {
        ids: vec![1, 4, 5, 6, 7, 8],
        start: 3,
    }];
    let mut p = SftParams::default();
    p.train.lr = 1e-2;
    p.train.lora = Some(LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: vec!["v_proj".into(), "up_proj".into()],
    });
    let (t, m) = sft_encoded(&cfg, w.clone(), &data, &p, &mut quiet()).unwrap();
    assert_eq!(m.steps, 1);
    assert_eq!(t.adapter().unwrap().0.len(), 2 * 2 * cfg.num_hidden_layers);
    let merged = t.merged().unwrap();
    let diff = |n: &str| -> f32 { max_abs_diff(merged.get(n).unwrap(), w.get(n).unwrap()) };
    assert!(diff("model.layers.0.self_attn.v_proj.weight") > 0.0);
    assert_eq!(diff("model.layers.0.self_attn.q_proj.weight"), 0.0);
    assert_eq!(diff("model.embed_tokens.weight"), 0.0);
}

#[test]
fn schedule_warms_up_then_decays() {
    let p = TrainParams {
        lr: 1.0,
        warmup_steps: 2,
        ..TrainParams::default()
    };
    let v: Vec<f64> = (1..=6).map(|s| lr_at(&p, s, 6)).collect();
    assert_eq!(v, [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]);
}

#[test]
fn truncation_keeps_a_response_token() {
    let mut e = Encoded {
        ids: (0..10).collect(),
        start: 8,
    };
    truncate(&mut e, 4);
    assert_eq!(e.ids.len(), 4);
    assert_eq!(e.response_len(), 1);
    assert_eq!(e.ids[e.start], 8);
    let mut e = Encoded {
        ids: (0..10).collect(),
        start: 3,
    };
    truncate(&mut e, 5);
    assert_eq!((e.ids, e.start), ((0..5).collect(), 3));
}
