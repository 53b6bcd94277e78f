//! The dense trainer's building blocks: row-wise ops (rms-norm, causal softmax, log-softmax,
//! SwiGLU) with their backward passes, and matrix products on `gemm` over strided views.
use rayon::prelude::*;

/// `x / sqrt(mean(x²) + eps) * w` per row: the factors `1 / sqrt(..)` and the output.
pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut inv = vec![0f32; x.len() / d];
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(&mut inv)
        .for_each(|((yr, xr), inv)| {
            *inv = rms_inv(xr, eps);
            for ((y, x), w) in yr.iter_mut().zip(xr).zip(w) {
                *y = x * *inv * w;
            }
        });
    (inv, y)
}

/// [`rms_norm`]'s output again from its input and factors: the same operations, the same
/// bits (the backward pass recomputes it instead of keeping it).
pub(super) fn rms_norm_with(x: &[f32], inv: &[f32], w: &[f32]) -> Vec<f32> {
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(inv)
        .for_each(|((yr, xr), &inv)| {
            for ((y, x), w) in yr.iter_mut().zip(xr).zip(w) {
                *y = x * inv * w;
            }
        });
    y
}

/// `1 / sqrt(mean(x²) + eps)` of one row.
pub(crate) fn rms_inv(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

/// Backward of [`rms_norm`]: adds the input's gradient to `dx` and the weight's to `dw`.
pub(super) fn rms_norm_backward(
    x: &[f32],
    inv: &[f32],
    w: &[f32],
    g: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let d = w.len();
    dx.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .zip(g.par_chunks(d))
        .zip(inv)
        .for_each(|(((o, xr), gr), &inv)| rms_norm_backward_row(xr, inv, w, gr, o));
    if dw.is_empty() {
        return; // frozen (LoRA)
    }
    // The weight's gradient sums over rows: columns in parallel, rows in order.
    const COLS: usize = 64;
    dw.par_chunks_mut(COLS).enumerate().for_each(|(c, dwc)| {
        let c0 = c * COLS;
        for ((xr, gr), &inv) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(inv) {
            for (j, dw) in dwc.iter_mut().enumerate() {
                *dw += gr[c0 + j] * xr[c0 + j] * inv;
            }
        }
    });
}

/// One row of the rms-norm input gradient, added to `out`: d/dx_j of x_j·inv·w_j summed
/// against g is inv·g_j·w_j minus x_j·inv³/d·Σ g_k w_k x_k (inv depends on every x_k).
pub(crate) fn rms_norm_backward_row(x: &[f32], inv: f32, w: &[f32], g: &[f32], out: &mut [f32]) {
    let dot: f32 = g.iter().zip(w).zip(x).map(|((g, w), x)| g * w * x).sum();
    let c = dot * inv * inv * inv / w.len() as f32;
    for (((o, x), g), w) in out.iter_mut().zip(x).zip(g).zip(w) {
        *o += inv * g * w - x * c;
    }
}

/// Softmax of `scale · row[..n]` in place; the positions after `n` (future keys) become 0.
pub(crate) fn causal_softmax_row(row: &mut [f32], n: usize, scale: f32) {
    causal_softmax_row_stats(row, n, scale);
}

/// [`causal_softmax_row`], returning the row's statistics: the largest scaled score and the
/// sum of the shifted exponentials (what [`causal_softmax_recompute`] needs).
pub(crate) fn causal_softmax_row_stats(row: &mut [f32], n: usize, scale: f32) -> SoftmaxStats {
    let (head, tail) = row.split_at_mut(n);
    let m = head
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v * scale));
    let mut sum = 0f32;
    for y in head.iter_mut() {
        *y = (*y * scale - m).exp();
        sum += *y;
    }
    for y in head.iter_mut() {
        *y /= sum;
    }
    tail.fill(0.0);
    SoftmaxStats { max: m, sum }
}

/// A softmax row's largest (scaled) input and sum of shifted exponentials.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct SoftmaxStats {
    pub(crate) max: f32,
    pub(crate) sum: f32,
}

/// The probabilities [`causal_softmax_row_stats`] made from these scores, recomputed from its
/// statistics: the same operations in the same order, so the same bits.
pub(crate) fn causal_softmax_recompute(row: &mut [f32], n: usize, scale: f32, st: SoftmaxStats) {
    let (head, tail) = row.split_at_mut(n);
    for y in head.iter_mut() {
        *y = (*y * scale - st.max).exp() / st.sum;
    }
    tail.fill(0.0);
}

/// Backward of [`causal_softmax_row`] in place: `g` (the output's gradient) becomes the
/// scores' gradient, `scale · y · (g - Σ y g)` over the first `n` positions, 0 after.
pub(crate) fn causal_softmax_backward_row(g: &mut [f32], y: &[f32], n: usize, scale: f32) {
    let dot: f32 = y[..n].iter().zip(&g[..n]).map(|(y, g)| y * g).sum();
    for (g, y) in g[..n].iter_mut().zip(&y[..n]) {
        *g = scale * y * (*g - dot);
    }
    g[n..].fill(0.0);
}

/// Log-softmax of a logits row at `target`; the row becomes the softmax probabilities.
pub(crate) fn log_softmax_in_place(row: &mut [f32], target: usize) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let shifted = row[target] - m;
    // One exp per logit: the shifted exponentials become the probabilities.
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
    shifted - sum.ln()
}

/// `silu(gate) * up` (candle's silu: `v / (1 + e^-v)`).
pub(super) fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; gate.len()];
    out.par_chunks_mut(4096)
        .zip(gate.par_chunks(4096).zip(up.par_chunks(4096)))
        .for_each(|(o, (a, u))| {
            for ((o, a), u) in o.iter_mut().zip(a).zip(u) {
                *o = silu(*a) * u;
            }
        });
    out
}

pub(crate) fn silu(a: f32) -> f32 {
    a / (1.0 + (-a).exp())
}

/// Derivatives of `silu(a) * u` with respect to `a` and `u` given the output's gradient `g`.
pub(crate) fn swiglu_grad(a: f32, u: f32, g: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + (-a).exp());
    (g * u * s * (1.0 + a * (1.0 - s)), g * a * s)
}

/// Backward of [`swiglu`]: `g` (the output's gradient) becomes the gate's gradient; returns
/// the up projection's.
pub(super) fn swiglu_backward(gate: &[f32], up: &[f32], g: &mut [f32]) -> Vec<f32> {
    let mut du = vec![0f32; g.len()];
    g.par_chunks_mut(4096)
        .zip(du.par_chunks_mut(4096))
        .zip(gate.par_chunks(4096).zip(up.par_chunks(4096)))
        .for_each(|((g, du), (a, u))| {
            for (((g, du), a), u) in g.iter_mut().zip(du).zip(a).zip(u) {
                (*g, *du) = swiglu_grad(*a, *u, *g);
            }
        });
    du
}

/// `x W^T` for row-major `x` `(n, in)` and `W` `(out, in)`.
pub(super) fn linear(x: &[f32], w: &[f32], out: usize) -> Vec<f32> {
    let n = x.len() / (w.len() / out);
    let mut y = vec![0f32; n * out];
    linear_into(&mut y, x, w, n, false);
    y
}

/// `y (+)= x W^T` for `x` `(n, in)`, `W` `(out, in)`, `y` `(n, out)`.
pub(super) fn linear_into(y: &mut [f32], x: &[f32], w: &[f32], n: usize, accumulate: bool) {
    let (inp, out) = (x.len() / n, y.len() / n);
    matmul(
        Out::rows(y, n, out),
        View::rows(x, n, inp),
        View::rows(w, out, inp).t(),
        accumulate,
    );
}

/// `dx (+)= dy W` for `dy` `(n, out)`, `W` `(out, in)`, `dx` `(n, in)`.
pub(super) fn linear_backward_input(
    dx: &mut [f32],
    dy: &[f32],
    w: &[f32],
    n: usize,
    accumulate: bool,
) {
    let (inp, out) = (dx.len() / n, dy.len() / n);
    matmul(
        Out::rows(dx, n, inp),
        View::rows(dy, n, out),
        View::rows(w, out, inp),
        accumulate,
    );
}

/// `dW += dy^T x` for `dy` `(n, out)`, `x` `(n, in)`, `dW` `(out, in)`.
pub(super) fn weight_grad(dw: &mut [f32], dy: &[f32], x: &[f32], n: usize) {
    let (out, inp) = (dy.len() / n, x.len() / n);
    matmul(
        Out::rows(dw, out, inp),
        View::rows(dy, n, out).t(),
        View::rows(x, n, inp),
        true,
    );
}

/// A read-only strided f32 matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    pub(super) fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view out of bounds"
        );
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    pub(super) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// Rows `r0..r1`.
    pub(super) fn row_range(self, r0: usize, r1: usize) -> Self {
        Self::new(
            &self.data[r0 * self.rs..],
            r1 - r0,
            self.cols,
            self.rs,
            self.cs,
        )
    }

    pub(super) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A writable strided f32 matrix (as [`View`]), bounds checked when made.
pub(super) struct Out<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    _life: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> Out<'a> {
    pub(super) fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// `(rows, cols)` with row stride `rs`.
    pub(super) fn strided(data: &'a mut [f32], rows: usize, cols: usize, rs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + cols <= data.len(),
            "output matrix out of bounds"
        );
        Self {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            rs,
            cs: 1,
            _life: std::marker::PhantomData,
        }
    }
}

/// A buffer several threads write disjoint blocks of (attention heads).
pub(super) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    _life: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: writers promise disjoint blocks (see `block`).
unsafe impl Send for SharedOut<'_> {}
unsafe impl Sync for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub(super) fn new(data: &'a mut [f32]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _life: std::marker::PhantomData,
        }
    }

    /// The `(rows, cols)` block at `offset` with row stride `rs`.
    ///
    /// # Safety
    /// No other thread may read or write these elements while the block is in use.
    pub(super) unsafe fn block(
        &self,
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
    ) -> Out<'a> {
        assert!(
            rows == 0 || cols == 0 || offset + (rows - 1) * rs + cols <= self.len,
            "block out of bounds"
        );
        Out {
            ptr: self.ptr.add(offset),
            rows,
            cols,
            rs,
            cs: 1,
            _life: std::marker::PhantomData,
        }
    }
}

/// `out (+)= a b` on rayon's threads (large products).
pub(super) fn matmul(out: Out, a: View, b: View, accumulate: bool) {
    gemm_call(out, a, b, (accumulate, 1.0), gemm::Parallelism::Rayon(0));
}

/// `out (+)= a b` on this thread (the per-head products, already run in parallel).
pub(super) fn matmul_seq(out: Out, a: View, b: View, accumulate: bool) {
    gemm_call(out, a, b, (accumulate, 1.0), gemm::Parallelism::None);
}

/// `out = k·a b`, or `out += k·a b` when accumulating.
pub(super) fn gemm_call(
    out: Out,
    a: View,
    b: View,
    (accumulate, k): (bool, f32),
    par: gemm::Parallelism,
) {
    assert!(
        a.cols == b.rows && out.rows == a.rows && out.cols == b.cols,
        "matmul shapes: ({}, {}) x ({}, {}) into ({}, {})",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        out.rows,
        out.cols
    );
    if out.rows == 0 || out.cols == 0 {
        return;
    }
    // SAFETY: every view was bounds-checked when made, and `out` is exclusively borrowed.
    // gemm computes dst = alpha·dst + beta·a·b (beta = k), reading dst only when `accumulate`.
    unsafe {
        gemm::gemm(
            out.rows,
            out.cols,
            a.cols,
            out.ptr,
            out.cs as isize,
            out.rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            k,
            false,
            false,
            false,
            par,
        );
    }
}
