//! The dense trainer's lm-head and log-softmax over the vocabulary, a block of vocabulary
//! columns at a time: `rows x vocab` logits (49k floats per scored token) never exist at
//! once. The forward pass keeps each row's log-sum-exp; the backward pass recomputes one
//! block of logits at a time from it, turns them into the logits' gradient and multiplies
//! that into the hidden states' and the head weight's gradients.
use rayon::prelude::*;

use super::dense_ops::{gemm_call, matmul, Out, View};

/// Logits per block, at most (so a block is ~16 MB however many rows are scored).
const BLOCK_LOGITS: usize = 1 << 22;

/// Vocabulary columns per block for `rows` scored rows (see [`block_cols`]).
/// (Unit tests use 5, so the tiny model's 64-token vocabulary spans blocks and a partial one.)
pub(super) fn vocab_block(rows: usize, vocab: usize) -> usize {
    if cfg!(test) {
        5
    } else {
        block_cols(rows, vocab)
    }
}

/// As many columns as [`BLOCK_LOGITS`] allows for `rows` rows, at least 256 (keeping the
/// products efficient), a multiple of 64; the whole vocabulary if that is fewer.
fn block_cols(rows: usize, vocab: usize) -> usize {
    let cols = (BLOCK_LOGITS / rows.max(1)).max(256) / 64 * 64;
    cols.min(vocab)
}

/// Blocks `(first, end)` of `cols` columns over `0..vocab`.
fn blocks(vocab: usize, cols: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..vocab)
        .step_by(cols.max(1))
        .map(move |c0| (c0, (c0 + cols).min(vocab)))
}

/// Logits of `hs` `(rows, d)` against head rows `c0..c1` of `head` `(vocab, d)`, into `out`
/// as a row-major `(rows, c1 - c0)` matrix. Forward and backward both call this, so the
/// recomputed logits equal the forward's exactly.
fn logits(out: &mut [f32], hs: &[f32], head: &[f32], d: usize, (c0, c1): (usize, usize)) {
    let rows = hs.len() / d;
    let w = View::rows(&head[c0 * d..c1 * d], c1 - c0, d);
    matmul(
        Out::rows(out, rows, c1 - c0),
        View::rows(hs, rows, d),
        w.t(),
        false,
    );
}

/// Log-probabilities of `targets` (one per row of `hs`) under softmax(`hs` head^T), and each
/// row's log-sum-exp (for [`backward`]), computed `cols` vocabulary columns at a time with a
/// running maximum and sum per row, in column order (the same result at any thread count).
pub(super) fn forward(
    hs: &[f32],
    head: &[f32],
    targets: &[u32],
    cols: usize,
) -> (Vec<f32>, Vec<f32>) {
    let rows = targets.len();
    if rows == 0 {
        return (vec![], vec![]);
    }
    let d = hs.len() / rows;
    let vocab = head.len() / d;
    // Per row: running max, running sum of exp(logit - max), the target's logit.
    let mut acc = vec![(f32::NEG_INFINITY, 0f32, 0f32); rows];
    let mut buf = vec![0f32; rows * cols.min(vocab)];
    for (c0, c1) in blocks(vocab, cols) {
        let w = c1 - c0;
        let buf = &mut buf[..rows * w];
        logits(buf, hs, head, d, (c0, c1));
        acc.par_iter_mut()
            .zip(buf.par_chunks(w))
            .zip(targets)
            .for_each(|(((m, s, tl), row), &t)| {
                let bm = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                if bm > *m {
                    *s *= (*m - bm).exp();
                    *m = bm;
                }
                *s += row.iter().map(|&v| (v - *m).exp()).sum::<f32>();
                if (c0..c1).contains(&(t as usize)) {
                    *tl = row[t as usize - c0];
                }
            });
    }
    acc.into_iter()
        .map(|(m, s, tl)| {
            let lse = m + s.ln();
            (tl - lse, lse)
        })
        .unzip()
}

/// Backward of [`forward`] for a loss with derivative `g[i]` by row `i`'s log-probability:
/// the logits' gradient is `g (onehot(target) - softmax)`. Adds `dlogits head` to `dhs`
/// `(rows, d)` and, when given, `dlogits^T hs` to `dhead` `(vocab, d)`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    hs: &[f32],
    head: &[f32],
    targets: &[u32],
    lse: &[f32],
    g: &[f32],
    cols: usize,
    dhs: &mut [f32],
    mut dhead: Option<&mut [f32]>,
) {
    let rows = targets.len();
    if rows == 0 {
        return;
    }
    let d = hs.len() / rows;
    let vocab = head.len() / d;
    let mut buf = vec![0f32; rows * cols.min(vocab)];
    for (c0, c1) in blocks(vocab, cols) {
        let w = c1 - c0;
        let buf = &mut buf[..rows * w];
        logits(buf, hs, head, d, (c0, c1));
        buf.par_chunks_mut(w)
            .zip(targets)
            .zip(lse.par_iter().zip(g))
            .for_each(|((row, &t), (&lse, &gi))| {
                row.iter_mut().for_each(|v| *v = -gi * (*v - lse).exp());
                if (c0..c1).contains(&(t as usize)) {
                    row[t as usize - c0] += gi;
                }
            });
        let dl = View::rows(buf, rows, w);
        let wc = View::rows(&head[c0 * d..c1 * d], w, d);
        // Blocks add in column order: the same sum at any thread count.
        gemm_call(
            Out::rows(dhs, rows, d),
            dl,
            wc,
            (true, 1.0),
            gemm::Parallelism::Rayon(0),
        );
        if let Some(dh) = dhead.as_deref_mut() {
            matmul(
                Out::rows(&mut dh[c0 * d..c1 * d], w, d),
                dl.t(),
                View::rows(hs, rows, d),
                true,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain computation: whole logits rows, log-softmax, its gradient.
    fn reference(
        hs: &[f32],
        head: &[f32],
        targets: &[u32],
        g: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let d = hs.len() / targets.len();
        let vocab = head.len() / d;
        let (mut lp, mut dhs, mut dhead) = (vec![], vec![0f32; hs.len()], vec![0f32; head.len()]);
        for (i, &t) in targets.iter().enumerate() {
            let x = &hs[i * d..][..d];
            let l: Vec<f64> = (0..vocab)
                .map(|v| (0..d).map(|j| x[j] as f64 * head[v * d + j] as f64).sum())
                .collect();
            let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + l.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            lp.push((l[t as usize] - lse) as f32);
            for v in 0..vocab {
                let dl = g[i] as f64 * (f64::from(v == t as usize) - (l[v] - lse).exp());
                for j in 0..d {
                    dhs[i * d + j] += (dl * head[v * d + j] as f64) as f32;
                    dhead[v * d + j] += (dl * x[j] as f64) as f32;
                }
            }
        }
        (lp, dhs, dhead)
    }

    fn close(a: &[f32], b: &[f32], what: &str) {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() / scale < 1e-5, "{what}[{i}]: {x} vs {y}");
        }
    }

    /// Any block width, dividing the vocabulary or not, one column or all of them, gives the
    /// plain computation's log-probs and gradients.
    #[test]
    fn blocks_of_any_width_match_the_whole_rows() {
        let (rows, d, vocab) = (7, 6, 23);
        let val = |i: usize, k: f32| (i as f32 * 0.37 + k).sin() * 1.5;
        let hs: Vec<f32> = (0..rows * d).map(|i| val(i, 0.1)).collect();
        let head: Vec<f32> = (0..vocab * d).map(|i| val(i, 2.0)).collect();
        let targets: Vec<u32> = (0..rows as u32)
            .map(|i| (i * 5 + 3) % vocab as u32)
            .collect();
        let g: Vec<f32> = (0..rows).map(|i| 0.3 - 0.2 * i as f32).collect();
        let (lp0, dhs0, dhead0) = reference(&hs, &head, &targets, &g);
        for cols in [1, 4, 5, 22, 23, 64] {
            let (lp, lse) = forward(&hs, &head, &targets, cols);
            close(&lp, &lp0, &format!("log-probs, {cols} columns"));
            let (mut dhs, mut dhead) = (vec![0.5f32; hs.len()], vec![0.25f32; head.len()]);
            backward(
                &hs,
                &head,
                &targets,
                &lse,
                &g,
                cols,
                &mut dhs,
                Some(&mut dhead),
            );
            // Both gradients add to what was there.
            let sub = |v: &[f32], c: f32| v.iter().map(|x| x - c).collect::<Vec<_>>();
            close(&sub(&dhs, 0.5), &dhs0, &format!("dhs, {cols} columns"));
            close(
                &sub(&dhead, 0.25),
                &dhead0,
                &format!("dhead, {cols} columns"),
            );
            let mut only = vec![0f32; hs.len()];
            backward(&hs, &head, &targets, &lse, &g, cols, &mut only, None);
            close(&only, &dhs0, &format!("dhs without dhead, {cols} columns"));
        }
    }

    #[test]
    fn blocks_are_bounded_and_cover_the_vocabulary() {
        // SmolLM2's vocabulary: a DPO pair's ~1,240 scored rows, one row, very many rows.
        assert_eq!(block_cols(1240, 49152), 3328);
        assert!(1240 * block_cols(1240, 49152) <= BLOCK_LOGITS);
        assert_eq!(block_cols(1, 49152), 49152);
        assert_eq!(block_cols(100_000, 49152), 256);
        assert_eq!(block_cols(10, 100), 100);
        assert_eq!(blocks(23, 5).collect::<Vec<_>>().last(), Some(&(20, 23)));
        assert_eq!(blocks(23, 64).collect::<Vec<_>>(), [(0, 23)]);
    }
}
