//! Causal grouped-query attention of the dense trainer, forward and backward, per sequence
//! of a packed batch, in blocks of query rows that stop at their last key.
//!
//! Memory-efficient as flash attention is: the forward pass keeps only each row's softmax
//! statistics (largest score, sum of exponentials), not the `heads x t x t` probabilities,
//! and the backward pass recomputes one block of probabilities at a time from q, k and those
//! statistics. The recomputation repeats the forward's operations in the same order, so the
//! probabilities, and the gradients, are bit for bit the ones a stored copy would give.
use rayon::prelude::*;

use super::dense::{Dense, Packed};
use super::dense_ops::{
    causal_softmax_backward_row, causal_softmax_recompute, causal_softmax_row_stats, matmul_seq,
    Out, SharedOut, SoftmaxStats, View,
};

impl Dense {
    /// Causal grouped-query attention per sequence: the softmax statistics of every query
    /// row and head (see [`unit_ranges`] for their order), and the output `(rows, heads * hd)`.
    pub(super) fn attention(
        &self,
        pk: &Packed,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> (Vec<SoftmaxStats>, Vec<f32>) {
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (qw, kw, rep) = (nh * hd, nkv * hd, nh / nkv);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut stats = vec![SoftmaxStats::default(); nh * pk.ids.len()];
        let mut y = vec![0f32; q.len()];
        let ys = SharedOut::new(&mut y);
        units(pk, &mut stats, nkv, rep)
            .into_par_iter()
            .for_each(|(s, grp, st)| {
                let (off, t) = (pk.offs[s], pk.offs[s + 1] - pk.offs[s]);
                let kg = View::new(&k[off * kw + grp * hd..], t, hd, kw, 1);
                let vg = View::new(&v[off * kw + grp * hd..], t, hd, kw, 1);
                let mut pb = vec![0f32; ATT_BLOCK.min(t) * t];
                for (j, st) in st.chunks_exact_mut(t).enumerate() {
                    let h = grp * rep + j;
                    let qh = View::new(&q[off * qw + h * hd..], t, hd, qw, 1);
                    for (i0, i1) in row_blocks(t) {
                        let rows = i1 - i0;
                        scores(&mut pb, qh, kg, (i0, i1));
                        for (r, row) in pb[..rows * i1].chunks_exact_mut(i1).enumerate() {
                            st[i0 + r] = causal_softmax_row_stats(row, i0 + r + 1, scale);
                        }
                        let p = View::rows(&pb, rows, i1);
                        // SAFETY: head `h` of sequence `s` is written by this unit only.
                        let yb = unsafe { ys.block(off * qw + h * hd + i0 * qw, rows, hd, qw) };
                        matmul_seq(yb, p, vg.row_range(0, i1), false);
                    }
                }
            });
        (stats, y)
    }

    /// Gradients of q (after rope), k (after rope) and v from the attention output's, given
    /// the inputs and softmax statistics of [`Dense::attention`].
    pub(super) fn attention_backward(
        &self,
        pk: &Packed,
        t: Saved,
        dy: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (qw, kw, rep) = (nh * hd, nkv * hd, nh / nkv);
        let scale = 1.0 / (hd as f32).sqrt();
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; t.q.len()],
            vec![0f32; t.k.len()],
            vec![0f32; t.v.len()],
        );
        let (dqs, dks, dvs) = (
            SharedOut::new(&mut dq),
            SharedOut::new(&mut dk),
            SharedOut::new(&mut dv),
        );
        unit_ranges(pk, nkv, rep)
            .into_par_iter()
            .for_each(|(s, grp, range)| {
                let (off, tl) = (pk.offs[s], pk.offs[s + 1] - pk.offs[s]);
                let kg = View::new(&t.k[off * kw + grp * hd..], tl, hd, kw, 1);
                let vg = View::new(&t.v[off * kw + grp * hd..], tl, hd, kw, 1);
                let block = ATT_BLOCK.min(tl) * tl;
                let (mut pb, mut ds) = (vec![0f32; block], vec![0f32; block]);
                for (j, st) in t.stats[range].chunks_exact(tl).enumerate() {
                    let h = grp * rep + j;
                    let qh = View::new(&t.q[off * qw + h * hd..], tl, hd, qw, 1);
                    let dyh = View::new(&dy[off * qw + h * hd..], tl, hd, qw, 1);
                    for (i0, i1) in row_blocks(tl) {
                        let rows = i1 - i0;
                        // This block's probabilities, as the forward pass had them.
                        scores(&mut pb, qh, kg, (i0, i1));
                        for (r, row) in pb[..rows * i1].chunks_exact_mut(i1).enumerate() {
                            causal_softmax_recompute(row, i0 + r + 1, scale, st[i0 + r]);
                        }
                        let p = View::rows(&pb, rows, i1);
                        let dyb = dyh.row_range(i0, i1);
                        matmul_seq(
                            Out::rows(&mut ds, rows, i1),
                            dyb,
                            vg.row_range(0, i1).t(),
                            false,
                        );
                        // SAFETY: the k/v columns of group `grp` and the q columns of head `h`,
                        // rows of sequence `s`, are written by this unit only; dk and dv start
                        // at zero, so every product adds.
                        unsafe {
                            let dvb = dvs.block(off * kw + grp * hd, i1, hd, kw);
                            matmul_seq(dvb, p.t(), dyb, true);
                        }
                        for (r, (drow, prow)) in ds[..rows * i1]
                            .chunks_exact_mut(i1)
                            .zip(pb.chunks_exact(i1))
                            .enumerate()
                        {
                            causal_softmax_backward_row(drow, prow, i0 + r + 1, scale);
                        }
                        let dsv = View::rows(&ds, rows, i1);
                        unsafe {
                            let dqb = dqs.block(off * qw + h * hd + i0 * qw, rows, hd, qw);
                            matmul_seq(dqb, dsv, kg.row_range(0, i1), false);
                            let dkb = dks.block(off * kw + grp * hd, i1, hd, kw);
                            matmul_seq(dkb, dsv.t(), qh.row_range(i0, i1), true);
                        }
                    }
                }
            });
        (dq, dk, dv)
    }
}

/// What attention's backward pass reads of its forward pass.
#[derive(Clone, Copy)]
pub(super) struct Saved<'a> {
    pub(super) q: &'a [f32],
    pub(super) k: &'a [f32],
    pub(super) v: &'a [f32],
    pub(super) stats: &'a [SoftmaxStats],
}

/// Unscaled scores of query rows `i0..i1` against the keys up to row `i1`, into `out` as a
/// row-major `(i1 - i0, i1)` matrix. Forward and backward both call this, so the recomputed
/// scores equal the forward's exactly.
fn scores(out: &mut [f32], q: View, k: View, (i0, i1): (usize, usize)) {
    let sb = Out::rows(out, i1 - i0, i1);
    matmul_seq(sb, q.row_range(i0, i1), k.row_range(0, i1).t(), false);
}

/// Query rows per block of causal attention: a block's products stop at the keys up to its
/// last row, skipping the masked upper triangle (about half the work on long sequences), and
/// its probabilities are the only ones in memory at a time.
/// (Unit tests use 3, so their short sequences span several blocks and a partial last one.)
pub(super) const ATT_BLOCK: usize = if cfg!(test) { 3 } else { 64 };

/// `(first, end)` rows of each block of a `t`-row sequence.
pub(super) fn row_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t)
        .step_by(ATT_BLOCK)
        .map(move |i0| (i0, (i0 + ATT_BLOCK).min(t)))
}

/// The work units of attention: (sequence, kv group, range of that group's heads' softmax
/// statistics). The statistics are ordered by sequence, then query head, then row; query
/// heads sharing a key/value head are adjacent, so each unit's statistics are one contiguous
/// range (`rep` heads of `t` rows), and units write disjoint outputs.
pub(super) fn unit_ranges(
    pk: &Packed,
    nkv: usize,
    rep: usize,
) -> Vec<(usize, usize, std::ops::Range<usize>)> {
    let mut out = vec![];
    let mut at = 0;
    for s in 0..pk.offs.len() - 1 {
        let t = pk.offs[s + 1] - pk.offs[s];
        for grp in 0..nkv {
            let len = rep * t;
            out.push((s, grp, at..at + len));
            at += len;
        }
    }
    out
}

/// [`unit_ranges`] as disjoint mutable slices of `stats`.
fn units<'a, T>(
    pk: &Packed,
    stats: &'a mut [T],
    nkv: usize,
    rep: usize,
) -> Vec<(usize, usize, &'a mut [T])> {
    let mut rest = stats;
    let mut out = vec![];
    for (s, grp, range) in unit_ranges(pk, nkv, rep) {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
        out.push((s, grp, head));
        rest = tail;
    }
    out
}

#[cfg(test)]
#[path = "dense_attention_tests.rs"]
mod tests;
