//! Tests of the judge: parsing, the prompt, and judging on the tiny model, one pair at a time
//! and batched (sampled and digit), against a full prefill of the prompt.
use super::*;
use crate::engine::fixture::write_tiny_model;
use crate::engine::model::{load, WeightMode};

#[test]
fn parses_scores_robustly() {
    let cases: &[(&str, Option<f64>)] = &[
        ("Score: 4", Some(4.0)),
        ("score: 4", Some(4.0)),
        ("SCORE: 2", Some(2.0)),
        ("Score: 4/5", Some(4.0)),
        ("Score: 4 / 5", Some(4.0)),
        ("“Score: 3”", Some(3.0)),
        ("\"Score: 5\"", Some(5.0)),
        ("**Score:** 2", Some(2.0)),
        ("Score:3", Some(3.0)),
        (
            "The response is fine.\nScore: 1\nActually, Score: 2",
            Some(2.0),
        ),
        ("Total score: 0", Some(0.0)),
        ("Score: 3.5", Some(3.5)),
        ("Score: 4.", Some(4.0)),
        ("Score: <total points>", None),
        ("Score: 7", None),
        ("Score: 8/10", None),
        ("I give it four points.", None),
        ("", None),
        ("Score: 3 then Score: nonsense", Some(3.0)),
        ("ÜBER gut. Score: 5", Some(5.0)),
        ("Scores: 4", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_score(text), *want, "{text:?}");
    }
}

#[test]
fn prompt_is_verbatim_and_slots_filled_once() {
    assert!(JUDGE_PROMPT.contains("user’s question"));
    assert!(JUDGE_PROMPT.contains("“Score: <total points>”"));
    let p = judge_prompt("What is 2+2?", "It is <INSTRUCTION_HERE> 4.");
    assert!(p.contains("User: What is 2+2?\n<response>It is <INSTRUCTION_HERE> 4.</response>"));
    assert!(!p.contains(RESPONSE_SLOT));
}

#[test]
fn averages_parsed_samples_and_keeps_unparsed_as_none() {
    let j = Judgement::from_texts(vec!["Score: 4".into(), "no idea".into(), "Score: 3".into()]);
    assert_eq!(j.score, Some(3.5));
    assert_eq!(j.samples[1].score, None);
    assert_eq!(j.samples[1].text, "no idea");
    let none = Judgement::from_texts(vec!["meh".into(), "hmm".into()]);
    assert_eq!(none.score, None);
}

#[test]
fn judges_on_the_tiny_model() {
    let t = tempfile::tempdir().unwrap();
    write_tiny_model(t.path(), 2).unwrap();
    let m = load(t.path(), WeightMode::Auto).unwrap();
    let judge = Judge::new(&m).unwrap();
    let params = JudgeParams {
        samples: 3,
        sampling: SamplingParams {
            max_tokens: 8,
            seed: 3,
            ..SamplingParams::default()
        },
    };
    let a = judge
        .judge("What is 2+2?", "4", &params, &mut |_| {})
        .unwrap();
    let b = judge
        .judge("What is 2+2?", "4", &params, &mut |_| {})
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.samples.len(), 3);
    // Whatever the random model writes, the score is exactly what the parser finds.
    for s in &a.samples {
        assert_eq!(s.score, parse_score(&s.text));
    }
    let d = judge.digit_score("What is 2+2?", "4").unwrap();
    assert!((d.probs.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    assert!((0.0..=5.0).contains(&d.expected));
    assert!(d.mass > 0.0 && d.mass <= 1.0);
    // The prefix reuse gives the same distribution as a fresh full pass, up to the 8-bit
    // rounding of activations (a last-bit difference upstream can flip one rounding).
    let text = format!("{}Score: ", judge.text("What is 2+2?", "4").unwrap());
    let ids = m.encode(&text).unwrap();
    let tt = Tensor::new(ids.as_slice(), m.device())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let full = m
        .forward(&tt, &mut KvCache::new(&m))
        .unwrap()
        .squeeze(0)
        .unwrap();
    let p: Vec<f32> = candle_nn::ops::softmax_last_dim(&full)
        .unwrap()
        .to_vec1()
        .unwrap();
    let p4 = p[m.encode("4").unwrap()[0] as usize] as f64;
    assert!((p4 / d.mass - d.probs[4]).abs() < 5e-3);
}

/// Pairs of different lengths for the batched tests.
const PAIRS: [(&str, &str); 5] = [
    ("What is 2+2?", "4"),
    ("Name a colour.", "Blue, like the sky on a clear summer day, or the sea."),
    ("Hi", ""),
    ("Explain rain.", "Water evaporates, rises, cools into droplets that form clouds; when the droplets grow heavy enough they fall as rain, and the cycle starts again."),
    ("Score this.", "Score: 5"),
];

fn tiny_judge_model(mode: WeightMode) -> (tempfile::TempDir, Model) {
    let t = tempfile::tempdir().unwrap();
    write_tiny_model(t.path(), 2).unwrap();
    let m = load(t.path(), mode).unwrap();
    (t, m)
}

#[test]
fn batched_sampled_judging_equals_one_pair_at_a_time_and_a_full_prefill() {
    let (_t, m) = tiny_judge_model(WeightMode::Auto);
    let judge = Judge::new(&m).unwrap();
    let params = JudgeParams {
        samples: 3,
        sampling: SamplingParams {
            max_tokens: 10,
            seed: 3,
            ..SamplingParams::default()
        },
    };
    let alone: Vec<Vec<Generation>> = PAIRS
        .iter()
        .map(|(i, r)| judge.generations(i, r, &params, &mut |_| {}).unwrap())
        .collect();
    for (k, (i, r)) in PAIRS.iter().enumerate() {
        // The shared prefix changes nothing: the same texts as a prefill of the whole prompt.
        let text = judge.text(i, r).unwrap();
        let full = generate_text(&m, &text, 3, &params.sampling, None, &mut |_| {}).unwrap();
        assert_eq!(full, alone[k], "pair {k}: prefix vs full prefill");
    }
    for b in [1, 2, 3, 7] {
        let mut got: Vec<Option<Vec<Generation>>> = vec![None; PAIRS.len()];
        judge.generations_batched(&PAIRS, &params, b, &mut |_| {}, &mut |i, r| {
            assert!(got[i].is_none(), "pair {i} answered twice");
            got[i] = Some(r.unwrap())
        });
        let got: Vec<Vec<Generation>> = got.into_iter().map(Option::unwrap).collect();
        assert_eq!(got, alone, "max_batch {b}");
    }
    let items: Vec<(String, String)> = PAIRS
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let all = judge.judge_all(&items, &params, &mut |_, _| {}).unwrap();
    for (j, gens) in all.iter().zip(&alone) {
        let want = Judgement::from_texts(gens.iter().map(|g| g.text.clone()).collect());
        assert_eq!(*j, want);
    }
}

/// Batched digit scores are the same bytes as one pair at a time. Against a prefill of the
/// whole prompt (no shared prefix) they are the same bytes too on quantized weights, where
/// every activation row is computed alone (8-bit activation rounding included), so the
/// prefix rows come out identical; on f32 weights candle's matmul may sum a row differently
/// for a different number of rows (the prefix alone vs the whole prompt), a last-bit change
/// that moves the expected score by far less than 1e-4.
#[test]
fn batched_digit_scores_equal_one_at_a_time_and_a_full_prefill() {
    for mode in [WeightMode::Auto, WeightMode::Q4_0, WeightMode::F32] {
        let (_t, m) = tiny_judge_model(mode);
        let judge = Judge::new(&m).unwrap();
        let alone: Vec<DigitScore> = PAIRS
            .iter()
            .map(|(i, r)| judge.digit_score(i, r).unwrap())
            .collect();
        for b in [1, 2, 3, 7] {
            let mut got: Vec<Option<DigitScore>> = vec![None; PAIRS.len()];
            judge.digit_scores(&PAIRS, b, &mut |i, r| got[i] = Some(r.unwrap()));
            let got: Vec<DigitScore> = got.into_iter().map(Option::unwrap).collect();
            assert_eq!(got, alone, "{mode:?} max_batch {b}");
        }
        for ((i, r), d) in PAIRS.iter().zip(&alone) {
            let text = format!("{}Score: ", judge.text(i, r).unwrap());
            let ids = m.encode(&text).unwrap();
            let tt = Tensor::new(ids.as_slice(), m.device())
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let full = m
                .forward(&tt, &mut KvCache::new(&m))
                .unwrap()
                .squeeze(0)
                .unwrap();
            let full: Vec<f32> = full.to_vec1().unwrap();
            let want = judge.digits_of(&full).unwrap();
            if mode == WeightMode::F32 {
                let diff = (want.expected - d.expected).abs();
                assert!(diff < 1e-4, "{mode:?} {i:?}: {diff}");
            } else {
                assert_eq!(want, *d, "{mode:?} {i:?}");
            }
        }
    }
}
