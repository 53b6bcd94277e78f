//! Tests of `engine::dense_attention`: the blocked, recomputing attention against the plain
//! computation that keeps every probability.
use super::*;
use crate::engine::llama::tests::tiny;

/// Packed rows of sequences of these lengths (token ids do not matter to attention).
fn packed(lens: &[usize]) -> Packed {
    let mut offs = vec![0];
    let mut pos = vec![];
    for &t in lens {
        offs.push(offs.last().unwrap() + t);
        pos.extend(0..t);
    }
    Packed {
        ids: vec![0; pos.len()],
        offs,
        pos,
        rows: vec![],
        targets: vec![],
        counts: vec![],
    }
}

/// Causal grouped-query attention and its backward pass with the whole probability matrix
/// of each head, in f64: (y, dq, dk, dv).
#[allow(clippy::type_complexity)]
fn reference(
    pk: &Packed,
    (nh, nkv, hd): (usize, usize, usize),
    (q, k, v): (&[f32], &[f32], &[f32]),
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (qw, kw, rep) = (nh * hd, nkv * hd, nh / nkv);
    let scale = 1.0 / (hd as f64).sqrt();
    let (mut y, mut dq) = (vec![0f64; q.len()], vec![0f64; q.len()]);
    let (mut dk, mut dv) = (vec![0f64; k.len()], vec![0f64; v.len()]);
    for s in 0..pk.offs.len() - 1 {
        let (off, t) = (pk.offs[s], pk.offs[s + 1] - pk.offs[s]);
        for h in 0..nh {
            let g = h / rep;
            let qi = |i: usize, c: usize| q[(off + i) * qw + h * hd + c] as f64;
            let kj = |j: usize, c: usize| k[(off + j) * kw + g * hd + c] as f64;
            let vj = |j: usize, c: usize| v[(off + j) * kw + g * hd + c] as f64;
            let dyi = |i: usize, c: usize| dy[(off + i) * qw + h * hd + c] as f64;
            for i in 0..t {
                let sc: Vec<f64> = (0..=i)
                    .map(|j| scale * (0..hd).map(|c| qi(i, c) * kj(j, c)).sum::<f64>())
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                let p: Vec<f64> = e.iter().map(|x| x / z).collect();
                let dp: Vec<f64> = (0..=i)
                    .map(|j| (0..hd).map(|c| dyi(i, c) * vj(j, c)).sum())
                    .collect();
                let dot: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                for j in 0..=i {
                    let ds = scale * p[j] * (dp[j] - dot);
                    for c in 0..hd {
                        y[(off + i) * qw + h * hd + c] += p[j] * vj(j, c);
                        dq[(off + i) * qw + h * hd + c] += ds * kj(j, c);
                        dk[(off + j) * kw + g * hd + c] += ds * qi(i, c);
                        dv[(off + j) * kw + g * hd + c] += p[j] * dyi(i, c);
                    }
                }
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (f(y), f(dq), f(dk), f(dv))
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() / scale < 1e-5, "{what}[{i}]: {x} vs {y}");
    }
}

/// Sequences shorter than a block, of exactly one, one row past it and several with a partial
/// last block: output and gradients equal the stored-probabilities computation.
#[test]
fn recomputed_attention_matches_stored_probabilities() {
    let (cfg, w) = tiny(41);
    let dense = Dense::new(&cfg, &w, None).unwrap();
    let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
    assert!(nh > nkv, "the fixture should share key/value heads");
    let lens = [1, ATT_BLOCK, ATT_BLOCK + 1, 3 * ATT_BLOCK - 1, 2];
    let pk = packed(&lens);
    let n = pk.ids.len();
    let val = |i: usize, k: f32| (i as f32 * 0.61 + k).sin() * 2.0;
    let q: Vec<f32> = (0..n * nh * hd).map(|i| val(i, 0.3)).collect();
    let k: Vec<f32> = (0..n * nkv * hd).map(|i| val(i, 1.1)).collect();
    let v: Vec<f32> = (0..n * nkv * hd).map(|i| val(i, 2.5)).collect();
    let dy: Vec<f32> = (0..n * nh * hd).map(|i| val(i, 4.2)).collect();
    let (stats, y) = dense.attention(&pk, &q, &k, &v);
    assert_eq!(stats.len(), nh * n, "two floats per row and head, no t x t");
    let saved = Saved {
        q: &q,
        k: &k,
        v: &v,
        stats: &stats,
    };
    let (dq, dk, dv) = dense.attention_backward(&pk, saved, &dy);
    let (y0, dq0, dk0, dv0) = reference(&pk, (nh, nkv, hd), (&q, &k, &v), &dy);
    close(&y, &y0, "y");
    close(&dq, &dq0, "dq");
    close(&dk, &dk0, "dk");
    close(&dv, &dv0, "dv");
}

/// The probabilities the backward pass recomputes are bit for bit the forward's.
#[test]
fn recomputed_probabilities_are_the_forwards_bits() {
    let scores: Vec<f32> = (0..11).map(|i| (i as f32 * 1.7).cos() * 9.0).collect();
    for n in [1, 5, 11] {
        let mut fwd = scores.clone();
        let st = causal_softmax_row_stats(&mut fwd, n, 0.35);
        let mut again = scores.clone();
        causal_softmax_recompute(&mut again, n, 0.35, st);
        assert_eq!(fwd, again, "{n} keys");
        assert!(fwd[n..].iter().all(|&p| p == 0.0));
    }
}
