//! Tests of the continuous-batching scheduler on the tiny model: the same bytes whatever the
//! batch size and mix of prompts, against one prompt at a time and against today's lock-step
//! decoding of one prompt's candidates through [`Model::forward`].
use super::*;
use crate::engine::fixture::write_tiny_model;
use crate::engine::model::{load, WeightMode};
use candle_core::Tensor;

fn tiny(mode: WeightMode) -> (tempfile::TempDir, Model) {
    let t = tempfile::tempdir().unwrap();
    write_tiny_model(t.path(), 5).unwrap();
    let m = load(t.path(), mode).unwrap();
    (t, m)
}

fn sampling(seed: u64, max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        seed,
        temperature: 1.0,
        top_p: 0.95,
        ..SamplingParams::default()
    }
}

/// The prompts of different lengths (a few tokens to ~150) the tests mix.
fn texts(m: &Model) -> Vec<String> {
    let long =
        "Explain, step by step and with examples, how a hash map handles collisions. ".repeat(3);
    [
        "Hi",
        "Add 2 and 3.",
        long.as_str(),
        "Write a poem about the sea.",
        "Name a colour.",
    ]
    .iter()
    .map(|s| m.prompt(s).unwrap())
    .collect()
}

/// One prompt's `n` candidates decoded in lock step as one batch of equal-length sequences
/// through [`Model::forward`] (a shared prefill, then `repeat` and `select` of the cache): the
/// way srlm decoded before continuous batching, as an independent reference.
fn lockstep(m: &Model, text: &str, n: usize, params: &SamplingParams) -> Vec<Generation> {
    let ids = m.encode(text).unwrap();
    let mut cache = KvCache::new(m);
    let t = Tensor::new(ids.as_slice(), m.device())
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let first: Vec<f32> = m
        .forward(&t, &mut cache)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut rngs: Vec<ChaCha8Rng> = (0..n)
        .map(|i| ChaCha8Rng::seed_from_u64(candidate_seed(params.seed, text, i)))
        .collect();
    let mut gen: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut out: Vec<Option<Generation>> = vec![None; n];
    let mut next: Vec<u32> = (0..n)
        .map(|i| sample(&mut rngs[i], &[], &first, &ids, params))
        .collect();
    let mut live: Vec<usize> = (0..n).collect();
    cache = cache.repeat(n).unwrap();
    loop {
        let (mut keep, mut still, mut toks) = (Vec::new(), Vec::new(), Vec::new());
        for (row, (&c, &tok)) in live.iter().zip(&next).enumerate() {
            let stop = m.stop_ids.contains(&tok);
            if !stop {
                gen[c].push(tok);
            }
            if stop || gen[c].len() >= params.max_tokens {
                out[c] = Some(Generation {
                    text: m.decode(&gen[c]).unwrap(),
                    tokens: gen[c].len(),
                    finish: if stop { Finish::Stop } else { Finish::Length },
                });
            } else {
                keep.push(row);
                still.push(c);
                toks.push(tok);
            }
        }
        if still.is_empty() {
            break;
        }
        if keep.len() < cache.batch() {
            cache = cache.select(&keep).unwrap();
        }
        live = still;
        let t = Tensor::new(toks.as_slice(), m.device())
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        let logits = m.forward(&t, &mut cache).unwrap();
        next = live
            .iter()
            .enumerate()
            .map(|(row, &c)| {
                let l: Vec<f32> = logits.get(row).unwrap().to_vec1().unwrap();
                sample(&mut rngs[c], &gen[c], &l, &ids, params)
            })
            .collect();
    }
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn continuous_batching_gives_the_same_bytes_as_one_at_a_time() {
    for mode in [WeightMode::Auto, WeightMode::Q4_0, WeightMode::F32] {
        let (_t, m) = tiny(mode);
        let texts = texts(&m);
        // Different candidate counts, lengths and settings, so sequences finish at different
        // steps and slots are refilled mid-flight by other prompts' candidates.
        let params = [
            sampling(1, 9),
            sampling(2, 17),
            SamplingParams {
                repeat_penalty: 1.3,
                ..sampling(3, 13)
            },
            SamplingParams {
                temperature: 0.0,
                ..sampling(4, 6)
            },
            sampling(5, 21),
        ];
        let ns = [3, 1, 4, 2, 3];
        let jobs: Vec<Job> = texts
            .iter()
            .zip(&params)
            .zip(ns)
            .map(|((text, params), n)| Job {
                text: text.clone(),
                n,
                params,
                prefix: None,
            })
            .collect();
        let alone: Vec<Vec<Generation>> = jobs
            .iter()
            .map(|j| {
                let mut one = generate_all(&m, std::slice::from_ref(j), 1, &mut |_| {}).unwrap();
                one.pop().unwrap()
            })
            .collect();
        for (j, a) in jobs.iter().zip(&alone) {
            assert_eq!(a.len(), j.n);
            assert_eq!(
                *a,
                lockstep(&m, &j.text, j.n, j.params),
                "{mode:?} lock step"
            );
        }
        for b in [1, 2, 3, 7, DEFAULT_MAX_BATCH] {
            let all = generate_all(&m, &jobs, b, &mut |_| {}).unwrap();
            assert_eq!(all, alone, "{mode:?} max_batch {b}");
            // Another mix: the prompts in reverse order, each alone result still the same.
            let rev: Vec<Job> = jobs
                .iter()
                .rev()
                .map(|j| Job {
                    text: j.text.clone(),
                    ..*j
                })
                .collect();
            let mut back = generate_all(&m, &rev, b, &mut |_| {}).unwrap();
            back.reverse();
            assert_eq!(back, alone, "{mode:?} reversed, max_batch {b}");
        }
        // Candidates differ (own streams) and respect the limits.
        assert_ne!(alone[0][0].text, alone[0][1].text);
        for (g, p) in alone.iter().zip(&params) {
            for c in g {
                assert!(c.tokens <= p.max_tokens);
                assert!(c.tokens == p.max_tokens || c.finish == Finish::Stop);
            }
        }
    }
}

#[test]
fn results_arrive_per_job_with_progress() {
    let (_t, m) = tiny(WeightMode::Auto);
    let texts = texts(&m);
    let p = sampling(7, 8);
    let jobs: Vec<Job> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| Job {
            text: text.clone(),
            n: i % 3, // a job with no candidates among them
            params: &p,
            prefix: None,
        })
        .collect();
    let (mut seen, mut reports) = (Vec::new(), Vec::new());
    generate(&m, &jobs, 3, &mut |r| reports.push(r), &mut |i, r| {
        let g = r.unwrap();
        assert_eq!(g.len(), jobs[i].n, "job {i}");
        seen.push(i);
    });
    seen.sort_unstable();
    assert_eq!(seen, (0..jobs.len()).collect::<Vec<_>>());
    let last = reports.last().unwrap();
    assert_eq!(last.prompts, jobs.len());
    assert!(last.prompt_tokens > 0 && last.generated_tokens > 0);
    assert!(last.decode_tokens_per_s > 0.0, "{last:?}");
    // Every prompt with candidates was reported as started.
    for (i, j) in jobs.iter().enumerate() {
        if j.n > 0 {
            assert!(reports.iter().any(|r| r.prompt == i), "prompt {i}");
        }
    }
}

#[test]
fn a_failing_job_is_reported_and_later_jobs_do_not_start() {
    let (_t, m) = tiny(WeightMode::Auto);
    let p = sampling(1, 6);
    let ok = m.prompt("Hi").unwrap();
    let too_long = "word ".repeat(m.config.positions() + 8);
    let jobs: Vec<Job> = [ok.clone(), too_long, ok]
        .into_iter()
        .map(|text| Job {
            text,
            n: 2,
            params: &p,
            prefix: None,
        })
        .collect();
    let mut got = Vec::new();
    generate(&m, &jobs, 4, &mut |_| {}, &mut |i, r| {
        got.push((i, r.is_ok()))
    });
    got.sort_unstable();
    assert_eq!(got, vec![(0, true), (1, false)]);
    let err = generate_all(&m, &jobs, 4, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ModelError::TooLong { .. }), "{err}");
}

#[test]
fn runs_respect_the_item_and_token_limits() {
    let lens = [10, 20, 4000, 5000, 1, 1, 1];
    let r = runs(&lens, 2);
    assert_eq!(r, vec![0..2, 2..3, 3..4, 4..6, 6..7]);
    assert!(runs(&[], 4).is_empty());
    // Every item lands in exactly one run, in order.
    let flat: Vec<usize> = runs(&lens, 3).into_iter().flatten().collect();
    assert_eq!(flat, (0..lens.len()).collect::<Vec<_>>());
}
