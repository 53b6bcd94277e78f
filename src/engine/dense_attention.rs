//! Causal grouped-query attention of the dense trainer, forward and backward, per sequence
//! of a packed batch, in blocks of query rows that stop at their last key.
use rayon::prelude::*;

use super::dense::{Dense, LayerTape, Packed};
use super::dense_ops::{
    causal_softmax_backward_row, causal_softmax_row, matmul_seq, Out, SharedOut, View,
};

impl Dense {
    /// Causal grouped-query attention per sequence: probabilities `(heads, t, t)` per
    /// sequence, and the output `(rows, heads * hd)`.
    pub(super) fn attention(
        &self,
        pk: &Packed,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (qw, kw, rep) = (nh * hd, nkv * hd, nh / nkv);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut p = vec![0f32; probs_len(pk, nh)];
        let mut y = vec![0f32; q.len()];
        let ys = SharedOut::new(&mut y);
        units(pk, &mut p, nkv, rep)
            .into_par_iter()
            .for_each(|(s, grp, ps)| {
                let (off, t) = (pk.offs[s], pk.offs[s + 1] - pk.offs[s]);
                let kg = View::new(&k[off * kw + grp * hd..], t, hd, kw, 1);
                let vg = View::new(&v[off * kw + grp * hd..], t, hd, kw, 1);
                for (j, pm) in ps.chunks_exact_mut(t * t).enumerate() {
                    let h = grp * rep + j;
                    let qh = View::new(&q[off * qw + h * hd..], t, hd, qw, 1);
                    // Scores of each block of query rows against the keys up to its last row.
                    for (i0, i1) in row_blocks(t) {
                        let sb = Out::strided(&mut pm[i0 * t..], i1 - i0, i1, t);
                        matmul_seq(sb, qh.row_range(i0, i1), kg.row_range(0, i1).t(), false);
                    }
                    for (i, row) in pm.chunks_exact_mut(t).enumerate() {
                        causal_softmax_row(row, i + 1, scale);
                    }
                    for (i0, i1) in row_blocks(t) {
                        let pb = View::new(&pm[i0 * t..], i1 - i0, i1, t, 1);
                        // SAFETY: head `h` of sequence `s` is written by this unit only.
                        let yb = unsafe { ys.block(off * qw + h * hd + i0 * qw, i1 - i0, hd, qw) };
                        matmul_seq(yb, pb, vg.row_range(0, i1), false);
                    }
                }
            });
        (p, y)
    }

    /// Gradients of q (after rope), k (after rope) and v from the attention output's.
    pub(super) fn attention_backward(
        &self,
        pk: &Packed,
        t: &LayerTape,
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
                let ps = &t.p[range];
                let kg = View::new(&t.k[off * kw + grp * hd..], tl, hd, kw, 1);
                let vg = View::new(&t.v[off * kw + grp * hd..], tl, hd, kw, 1);
                let mut ds = vec![0f32; tl * tl];
                for (j, pm) in ps.chunks_exact(tl * tl).enumerate() {
                    let h = grp * rep + j;
                    let qh = View::new(&t.q[off * qw + h * hd..], tl, hd, qw, 1);
                    let dyh = View::new(&dy[off * qw + h * hd..], tl, hd, qw, 1);
                    for (i0, i1) in row_blocks(tl) {
                        let rows = i1 - i0;
                        let dyb = dyh.row_range(i0, i1);
                        let pb = View::new(&pm[i0 * tl..], rows, i1, tl, 1);
                        let dsb = Out::strided(&mut ds[i0 * tl..], rows, i1, tl);
                        matmul_seq(dsb, dyb, vg.row_range(0, i1).t(), false);
                        // SAFETY: the k/v columns of group `grp` and the q columns of head `h`,
                        // rows of sequence `s`, are written by this unit only; dk and dv start
                        // at zero, so every product adds.
                        unsafe {
                            let dvb = dvs.block(off * kw + grp * hd, i1, hd, kw);
                            matmul_seq(dvb, pb.t(), dyb, true);
                        }
                        for i in i0..i1 {
                            let (drow, prow) = (&mut ds[i * tl..][..tl], &pm[i * tl..][..tl]);
                            causal_softmax_backward_row(drow, prow, i + 1, scale);
                        }
                        let dsv = View::new(&ds[i0 * tl..], rows, i1, tl, 1);
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

/// Query rows per block of causal attention: a block's products stop at the keys up to its
/// last row, skipping the masked upper triangle (about half the work on long sequences).
/// (Unit tests use 3, so their short sequences span several blocks and a partial last one.)
pub(super) const ATT_BLOCK: usize = if cfg!(test) { 3 } else { 64 };

/// `(first, end)` rows of each block of a `t`-row sequence.
pub(super) fn row_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t)
        .step_by(ATT_BLOCK)
        .map(move |i0| (i0, (i0 + ATT_BLOCK).min(t)))
}

/// Length of the per-sequence attention probabilities of a batch.
pub(super) fn probs_len(pk: &Packed, heads: usize) -> usize {
    pk.offs
        .windows(2)
        .map(|w| heads * (w[1] - w[0]).pow(2))
        .sum()
}

/// The work units of attention: (sequence, kv group, range of that group's heads'
/// probabilities). Query heads sharing a key/value head are adjacent, so each unit's
/// probabilities are one contiguous range, and units write disjoint outputs.
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
            let len = rep * t * t;
            out.push((s, grp, at..at + len));
            at += len;
        }
    }
    out
}

/// [`unit_ranges`] as disjoint mutable slices of `p`.
pub(super) fn units<'a>(
    pk: &Packed,
    p: &'a mut [f32],
    nkv: usize,
    rep: usize,
) -> Vec<(usize, usize, &'a mut [f32])> {
    let mut rest = p;
    let mut out = vec![];
    for (s, grp, range) in unit_ranges(pk, nkv, rep) {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
        out.push((s, grp, head));
        rest = tail;
    }
    out
}
