//! Quantized matrix kernels for inference: `out = x · Wᵀ` with `W` held in GGML's Q4_1 or Q8_0
//! blocks (as a GGUF stores them) and `x` quantized on the fly to 8-bit blocks, the scheme
//! llama.cpp uses. candle 0.11 has no SIMD kernel for Q4_1 on x86 and spends a third of a
//! decode step in its thread pool's barrier; these kernels use AVX2 (`maddubs`) where the CPU
//! has it, a scalar loop otherwise, and rayon over output rows.
//!
//! Every output element is computed by one call in a fixed order, so results do not depend on
//! the thread count. Several activation rows (a batch of candidates, or a prompt's tokens) are
//! dotted with each weight block while it is in registers: the weights are read from memory once
//! per call, not once per row.
use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;

/// Values per block, for every supported kind.
pub const BLOCK: usize = 32;
/// Activation rows dotted with each weight block at once.
const ROWS: usize = 4;

/// How a matrix's blocks are laid out (GGML's own byte layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QKind {
    /// `d: f16, m: f16, qs: [u8; 16]`; value `i` = `d·q + m`, `q` the low nibbles of `qs` for
    /// `i < 16`, the high ones after.
    Q4_1,
    /// `d: f16, qs: [i8; 32]`; value = `d·q`.
    Q8_0,
}

impl QKind {
    fn block_bytes(self) -> usize {
        match self {
            QKind::Q4_1 => 20,
            QKind::Q8_0 => 34,
        }
    }
}

/// A weight matrix of `rows × cols` in quantized blocks, row-major.
#[derive(Clone)]
pub struct QMatrix {
    kind: QKind,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({:?}, {}×{})", self.kind, self.rows, self.cols)
    }
}

impl QMatrix {
    /// Take over a candle `QTensor` of a kind these kernels run: Q4_1 and Q8_0 as they are,
    /// Q4_0 rewritten exactly as Q4_1 (`m = −8d`). `None` for other kinds or a width that is
    /// not a whole number of blocks.
    pub fn from_qtensor(q: &QTensor) -> candle_core::Result<Option<QMatrix>> {
        let (rows, cols) = match q.shape().dims() {
            [r, c] => (*r, *c),
            _ => return Ok(None),
        };
        if cols % BLOCK != 0 {
            return Ok(None);
        }
        let bytes = q.data()?;
        let (kind, data) = match q.dtype() {
            GgmlDType::Q4_1 => (QKind::Q4_1, bytes.into_owned()),
            GgmlDType::Q8_0 => (QKind::Q8_0, bytes.into_owned()),
            GgmlDType::Q4_0 => (QKind::Q4_1, q4_0_as_q4_1(&bytes)),
            _ => return Ok(None),
        };
        let m = QMatrix {
            kind,
            rows,
            cols,
            data,
        };
        if m.data.len() != rows * m.row_bytes() {
            candle_core::bail!(
                "{:?} matrix {rows}×{cols} holds {} bytes, not {}",
                q.dtype(),
                m.data.len(),
                rows * m.row_bytes()
            );
        }
        Ok(Some(m))
    }

    pub fn kind(&self) -> QKind {
        self.kind
    }

    /// `(rows, cols)`: output width × input width.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.kind.block_bytes()
    }

    /// Row `j` as f32: the tests' reference for the kernels.
    #[cfg(test)]
    fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        let row = &self.data[j * self.row_bytes()..(j + 1) * self.row_bytes()];
        let bb = self.kind.block_bytes();
        for (b, blk) in row.chunks_exact(bb).enumerate() {
            let o = &mut out[b * BLOCK..(b + 1) * BLOCK];
            let d = f16_at(blk, 0);
            match self.kind {
                QKind::Q4_1 => {
                    let m = f16_at(blk, 2);
                    for i in 0..16 {
                        o[i] = d * (blk[4 + i] & 15) as f32 + m;
                        o[i + 16] = d * (blk[4 + i] >> 4) as f32 + m;
                    }
                }
                QKind::Q8_0 => {
                    for i in 0..BLOCK {
                        o[i] = d * blk[2 + i] as i8 as f32;
                    }
                }
            }
        }
    }

    /// `out[t·rows + j] = Σ_c x[t][c] · W[j][c]` for the `x.len()` quantized rows of `x`.
    pub fn matmul(&self, x: &XQuant, out: &mut [f32]) {
        assert_eq!(x.cols, self.cols, "activation width vs matrix width");
        let (m, n) = (x.len(), self.rows);
        assert!(out.len() >= m * n, "output buffer too small");
        let simd = has_avx2();
        // A few tasks per thread balances the load; each is a run of whole rows.
        let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(8);
        let dst = OutPtr(out.as_mut_ptr());
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let rows = c * chunk..((c + 1) * chunk).min(n);
            let mut t = 0;
            while t + ROWS <= m {
                for j in rows.clone() {
                    let r = self.dot::<ROWS>(simd, j, x, t);
                    for (i, v) in r.into_iter().enumerate() {
                        dst.put((t + i) * n + j, v);
                    }
                }
                t += ROWS;
            }
            for t in t..m {
                for j in rows.clone() {
                    dst.put(t * n + j, self.dot::<1>(simd, j, x, t)[0]);
                }
            }
        });
    }

    /// Row `j` of the matrix dotted with activation rows `t0..t0+R`.
    #[inline]
    fn dot<const R: usize>(&self, simd: bool, j: usize, x: &XQuant, t0: usize) -> [f32; R] {
        let rb = self.row_bytes();
        let w = &self.data[j * rb..(j + 1) * rb];
        assert!(t0 + R <= x.len());
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `has_avx2` checked the CPU; the kernels read `w` (one row of whole
            // blocks) and rows `t0..t0+R` of `x`, both bounds-checked just above.
            return unsafe {
                match self.kind {
                    QKind::Q4_1 => avx2::q4_1::<R>(w, x, t0),
                    QKind::Q8_0 => avx2::q8_0::<R>(w, x, t0),
                }
            };
        }
        let _ = simd;
        scalar_dot::<R>(self.kind, w, x, t0)
    }
}

/// Q4_0 blocks (`d, qs`; value `d·(q−8)`) rewritten as Q4_1 blocks (`d, m = −8d, qs`): the
/// same values exactly, so one kernel serves both.
fn q4_0_as_q4_1(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() / 18 * 20);
    for blk in src.chunks_exact(18) {
        let d = half::f16::from_le_bytes([blk[0], blk[1]]);
        let m = half::f16::from_f32(-8.0 * d.to_f32());
        out.extend_from_slice(&blk[..2]);
        out.extend_from_slice(&m.to_le_bytes());
        out.extend_from_slice(&blk[2..]);
    }
    out
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Activation rows quantized to 8-bit blocks: per block a scale `d`, 32 values `q` with
/// `x ≈ d·q`, and `s = d·Σq` (which the Q4_1 kernel needs for the blocks' offsets).
#[derive(Default)]
pub struct XQuant {
    cols: usize,
    rows: usize,
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl XQuant {
    /// Quantize `x` (`rows × cols`, row-major; `cols` a multiple of 32), reusing the buffers.
    pub fn quantize(&mut self, x: &[f32], cols: usize) {
        assert!(cols % BLOCK == 0 && x.len() % cols == 0);
        self.cols = cols;
        self.rows = x.len() / cols;
        let nb = x.len() / BLOCK;
        self.q.resize(x.len(), 0);
        self.d.resize(nb, 0.0);
        self.s.resize(nb, 0.0);
        for (b, xs) in x.chunks_exact(BLOCK).enumerate() {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, v) in self.q[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(xs) {
                *q = (v * id).round() as i8;
                sum += *q as i32;
            }
            self.d[b] = d;
            self.s[b] = d * sum as f32;
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }
}

/// Output pointer shared by the row tasks; each writes disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint indices below the length `matmul` asserted.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    #[inline]
    fn put(&self, i: usize, v: f32) {
        // SAFETY: see the impls above.
        unsafe { *self.0.add(i) = v }
    }
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static SIMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *SIMD.get_or_init(|| {
            std::env::var_os("SRLM_NO_SIMD").is_none()
                && is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The portable kernel: integer dot per block, then scaled, as the SIMD ones do.
fn scalar_dot<const R: usize>(kind: QKind, w: &[u8], x: &XQuant, t0: usize) -> [f32; R] {
    let nb = x.blocks_per_row();
    let bb = kind.block_bytes();
    let mut out = [0f32; R];
    for (r, o) in out.iter_mut().enumerate() {
        let mut acc = 0f32;
        for b in 0..nb {
            let blk = &w[b * bb..(b + 1) * bb];
            let xi = (t0 + r) * nb + b;
            let xq = &x.q[xi * BLOCK..(xi + 1) * BLOCK];
            let dw = f16_at(blk, 0);
            match kind {
                QKind::Q4_1 => {
                    let mut dot = 0i32;
                    for i in 0..16 {
                        dot += (blk[4 + i] & 15) as i32 * xq[i] as i32;
                        dot += (blk[4 + i] >> 4) as i32 * xq[i + 16] as i32;
                    }
                    acc += dot as f32 * (dw * x.d[xi]) + f16_at(blk, 2) * x.s[xi];
                }
                QKind::Q8_0 => {
                    let dot: i32 = (0..BLOCK)
                        .map(|i| blk[2 + i] as i8 as i32 * xq[i] as i32)
                        .sum();
                    acc += dot as f32 * (dw * x.d[xi]);
                }
            }
        }
        *o = acc;
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // `r` indexes several per-row arrays at once
mod avx2 {
    //! The AVX2 kernels: `maddubs` multiplies unsigned by signed bytes into 16-bit pair sums,
    //! `madd` with ones widens them to eight 32-bit sums, scaled in f32 per block.
    use super::{XQuant, BLOCK};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// `Σ a·b` over `a.len()` (a multiple of 16) elements.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in (0..a.len()).step_by(16) {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                s1,
            );
        }
        hsum(_mm256_add_ps(s0, s1))
    }

    /// `scores[j] = q·keys[j] · scale`, 32 lanes of `q` held in registers at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores(q: &[f32], keys: &[f32], scale: f32, scores: &mut [f32]) {
        let hd = q.len();
        let len = scores.len();
        assert!(hd % 32 == 0 && keys.len() >= len * hd);
        scores.fill(0.0);
        let (kp, sp) = (keys.as_ptr(), scores.as_mut_ptr());
        for slab in (0..hd).step_by(32) {
            let qp = q.as_ptr().add(slab);
            let qv = [
                _mm256_loadu_ps(qp),
                _mm256_loadu_ps(qp.add(8)),
                _mm256_loadu_ps(qp.add(16)),
                _mm256_loadu_ps(qp.add(24)),
            ];
            for j in 0..len {
                let k = kp.add(j * hd + slab);
                let a = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k));
                let b = _mm256_mul_ps(qv[1], _mm256_loadu_ps(k.add(8)));
                let a = _mm256_fmadd_ps(qv[2], _mm256_loadu_ps(k.add(16)), a);
                let b = _mm256_fmadd_ps(qv[3], _mm256_loadu_ps(k.add(24)), b);
                *sp.add(j) += hsum(_mm256_add_ps(a, b));
            }
        }
        for s in scores.iter_mut() {
            *s *= scale;
        }
    }

    /// `out = Σ_j p[j] · values[j]`, 32 lanes of `out` held in registers at a time.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn weighted_sum(p: &[f32], values: &[f32], out: &mut [f32]) {
        let hd = out.len();
        assert!(hd % 32 == 0 && values.len() >= p.len() * hd);
        let vp = values.as_ptr();
        for slab in (0..hd).step_by(32) {
            let mut acc = [_mm256_setzero_ps(); 4];
            for (j, &w) in p.iter().enumerate() {
                let w = _mm256_set1_ps(w);
                let v = vp.add(j * hd + slab);
                for (l, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(8 * l)), *a);
                }
            }
            for (l, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(slab + 8 * l), *a);
            }
        }
    }

    /// Two f16 at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16x2(p: *const u8) -> (f32, f32) {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32)));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }

    /// One Q4_1 block at `blk`: its 32 values as unsigned bytes, its scale `d` and offset `m`.
    #[inline(always)]
    unsafe fn q4_1_unpack(blk: *const u8) -> (__m256i, f32, f32) {
        let (dw, mw) = f16x2(blk);
        let low = _mm_set1_epi8(0x0F);
        let qs = _mm_loadu_si128(blk.add(4) as *const __m128i);
        let lo = _mm_and_si128(qs, low);
        let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), low);
        (_mm256_set_m128i(hi, lo), dw, mw)
    }

    /// Unsigned weight bytes `w` times the signed activation bytes at `x`: eight i32 sums as f32.
    #[inline(always)]
    unsafe fn madd_u8_i8(w: __m256i, x: *const i8) -> __m256 {
        let xv = _mm256_loadu_si256(x as *const __m256i);
        let p = _mm256_maddubs_epi16(w, xv);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }

    /// Q4_1 row `w` · activation rows `t0..t0+R`. Caller guarantees the bounds. Blocks are
    /// taken in pairs into two accumulators: one chain of dependent `fma`s would wait on
    /// its latency at every block.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q4_1<const R: usize>(w: &[u8], x: &XQuant, t0: usize) -> [f32; R] {
        let nb = x.blocks_per_row();
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
        let (mut off0, mut off1) = ([0f32; R], [0f32; R]);
        let (wp, xq, xd, xs) = (w.as_ptr(), x.q.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
        let mut b = 0;
        while b + 2 <= nb {
            let (w0, d0, m0) = q4_1_unpack(wp.add(b * 20));
            let (w1, d1, m1) = q4_1_unpack(wp.add(b * 20 + 20));
            for r in 0..R {
                let xi = (t0 + r) * nb + b;
                let p0 = madd_u8_i8(w0, xq.add(xi * BLOCK));
                let p1 = madd_u8_i8(w1, xq.add(xi * BLOCK + BLOCK));
                acc0[r] = _mm256_fmadd_ps(p0, _mm256_set1_ps(d0 * *xd.add(xi)), acc0[r]);
                acc1[r] = _mm256_fmadd_ps(p1, _mm256_set1_ps(d1 * *xd.add(xi + 1)), acc1[r]);
                off0[r] += m0 * *xs.add(xi);
                off1[r] += m1 * *xs.add(xi + 1);
            }
            b += 2;
        }
        if b < nb {
            let (w0, d0, m0) = q4_1_unpack(wp.add(b * 20));
            for r in 0..R {
                let xi = (t0 + r) * nb + b;
                let p0 = madd_u8_i8(w0, xq.add(xi * BLOCK));
                acc0[r] = _mm256_fmadd_ps(p0, _mm256_set1_ps(d0 * *xd.add(xi)), acc0[r]);
                off0[r] += m0 * *xs.add(xi);
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum(_mm256_add_ps(acc0[r], acc1[r])) + (off0[r] + off1[r]);
        }
        out
    }

    /// One Q8_0 block at `blk` times block `b` of activation rows `t0..t0+R`, into `acc`.
    /// `maddubs` needs one unsigned operand: the weights' absolute values, with their signs
    /// moved onto the activations.
    #[inline(always)]
    unsafe fn q8_0_block<const R: usize>(
        acc: &mut [__m256; R],
        blk: *const u8,
        x: &XQuant,
        t0: usize,
        b: usize,
    ) {
        let nb = x.blocks_per_row();
        let (dw, _) = f16x2(blk);
        let wv = _mm256_loadu_si256(blk.add(2) as *const __m256i);
        let aw = _mm256_sign_epi8(wv, wv);
        for r in 0..R {
            let xi = (t0 + r) * nb + b;
            let xv = _mm256_loadu_si256(x.q.as_ptr().add(xi * BLOCK) as *const __m256i);
            let sx = _mm256_sign_epi8(xv, wv);
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
            let scale = _mm256_set1_ps(dw * *x.d.as_ptr().add(xi));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[r]);
        }
    }

    /// Q8_0 row `w` · activation rows `t0..t0+R`, blocks in pairs as for Q4_1.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn q8_0<const R: usize>(w: &[u8], x: &XQuant, t0: usize) -> [f32; R] {
        let nb = x.blocks_per_row();
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
        let wp = w.as_ptr();
        let mut b = 0;
        while b + 2 <= nb {
            q8_0_block(&mut acc0, wp.add(b * 34), x, t0, b);
            q8_0_block(&mut acc1, wp.add(b * 34 + 34), x, t0, b + 1);
            b += 2;
        }
        if b < nb {
            q8_0_block(&mut acc0, wp.add(b * 34), x, t0, b);
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum(_mm256_add_ps(acc0[r], acc1[r]));
        }
        out
    }
}

/// `y = x / rms(x) · w` for each row of `x` (width `w.len()`), in place.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(w.len()) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for (v, g) in row.iter_mut().zip(w) {
            *v *= r * g;
        }
    }
}

/// Rotary position embedding of one head vector at one position, in place. `cos`/`sin` hold
/// the position's `hd/2` angles; `interleaved` pairs `(2i, 2i+1)` (llama.cpp's GGUF layout),
/// else `(i, i+hd/2)` (Hugging Face's).
pub fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = if interleaved {
            (2 * i, 2 * i + 1)
        } else {
            (i, i + half)
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * cos[i] - x1 * sin[i];
        x[b] = x0 * sin[i] + x1 * cos[i];
    }
}

/// One query head attending over `keys`/`values` (`len × hd` each, row-major):
/// `out = softmax(q·Kᵀ · scale) · V`. `scores` is scratch.
pub fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    let len = keys.len() / hd;
    scores.clear();
    scores.resize(len, 0.0);
    #[cfg(target_arch = "x86_64")]
    let simd = has_avx2() && hd % 32 == 0;
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    if simd {
        // SAFETY: AVX2/FMA present; `keys` holds `len` rows of `hd`, `scores` `len` slots.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx2::scores(q, keys, scale, scores)
        };
    } else {
        for (s, k) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
            *s = dot(q, k) * scale;
        }
    }
    let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    for s in scores.iter_mut() {
        *s *= inv;
    }
    if simd {
        // SAFETY: as above; `values` holds `len` rows of `hd`, `out` is `hd` long.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx2::weighted_sum(scores, values, out)
        };
    } else {
        out.fill(0.0);
        for (p, v) in scores.iter().zip(values.chunks_exact(hd)) {
            axpy(out, *p, v);
        }
    }
}

/// `Σ a·b`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && a.len() % 16 == 0 {
        // SAFETY: the CPU has AVX2/FMA; the kernel reads `a.len()` elements of both, and
        // `b` is at least as long (asserted).
        assert!(b.len() >= a.len());
        return unsafe { avx2::dot(a, b) };
    }
    // Eight partial sums, as the SIMD kernel keeps (and the compiler can vectorise).
    let mut acc = [0f32; 8];
    let n = a.len() / 8 * 8;
    for (ca, cb) in a[..n].chunks_exact(8).zip(b[..n].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let tail: f32 = a[n..].iter().zip(&b[n..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y += a·x`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    /// Reference: dequantized weights times the f32 activations.
    fn reference(m: &QMatrix, x: &[f32]) -> Vec<f32> {
        let (n, k) = m.dims();
        let mut row = vec![0f32; k];
        let mut out = vec![0f32; x.len() / k * n];
        for j in 0..n {
            m.dequantize_row(j, &mut row);
            for (t, xs) in x.chunks(k).enumerate() {
                out[t * n + j] = row.iter().zip(xs).map(|(a, b)| a * b).sum();
            }
        }
        out
    }

    fn matrix(kind: GgmlDType, n: usize, k: usize) -> QMatrix {
        let w = Tensor::from_vec(random(n, k, 7), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, kind).unwrap();
        QMatrix::from_qtensor(&q).unwrap().unwrap()
    }

    #[test]
    fn kernels_match_the_dequantized_product() {
        for kind in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4_0] {
            let (n, k) = (37, 96);
            let m = matrix(kind, n, k);
            // 1..=6 rows: the 4-row kernel, its tail, and both together
            for rows in 1..=6 {
                let x = random(rows, k, rows as u64);
                let mut xq = XQuant::default();
                xq.quantize(&x, k);
                let mut out = vec![0f32; rows * n];
                m.matmul(&xq, &mut out);
                let want = reference(&m, &x);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (i, (a, b)) in out.iter().zip(&want).enumerate() {
                    // the activations' 8-bit rounding is the only difference
                    assert!(
                        (a - b).abs() < 0.02 * scale,
                        "{kind:?} rows {rows} [{i}]: {a} vs {b}"
                    );
                }
                // the portable kernel gives the same values up to float summation order
                for t in 0..rows {
                    for j in 0..n {
                        let rb = m.row_bytes();
                        let s = scalar_dot::<1>(m.kind, &m.data[j * rb..(j + 1) * rb], &xq, t)[0];
                        assert!((s - out[t * n + j]).abs() < 1e-4 * scale.max(1.0));
                    }
                }
            }
        }
    }

    #[test]
    fn q4_0_is_read_as_the_same_values() {
        let w = Tensor::from_vec(random(4, 64, 3), (4, 64), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
        let want: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let m = QMatrix::from_qtensor(&q).unwrap().unwrap();
        assert_eq!(m.kind(), QKind::Q4_1);
        let mut got = vec![0f32; 4 * 64];
        for j in 0..4 {
            m.dequantize_row(j, &mut got[j * 64..(j + 1) * 64]);
        }
        assert_eq!(got, want);
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let m = matrix(GgmlDType::Q4_1, 300, 128);
        let x = random(5, 128, 9);
        let mut xq = XQuant::default();
        xq.quantize(&x, 128);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0f32; 5 * 300];
            pool.install(|| m.matmul(&xq, &mut out));
            out
        };
        assert_eq!(run(1), run(3));
    }

    /// A prompt's prefill and its one-token decode steps must agree: a row's value may not
    /// depend on the rows beside it (the 4-row kernel vs the tail).
    #[test]
    fn a_row_alone_equals_the_row_in_a_batch() {
        for kind in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (n, k) = (50, 64);
            let m = matrix(kind, n, k);
            let x = random(7, k, 5);
            let mut xq = XQuant::default();
            xq.quantize(&x, k);
            let mut all = vec![0f32; 7 * n];
            m.matmul(&xq, &mut all);
            for t in 0..7 {
                xq.quantize(&x[t * k..(t + 1) * k], k);
                let mut one = vec![0f32; n];
                m.matmul(&xq, &mut one);
                assert_eq!(&one[..], &all[t * n..(t + 1) * n], "{kind:?} row {t}");
            }
        }
    }

    #[test]
    fn attention_matches_a_plain_softmax() {
        for hd in [64, 24] {
            let len = 37;
            let q = random(1, hd, 1);
            let k = random(len, hd, 2);
            let v = random(len, hd, 3);
            let mut out = vec![0f32; hd];
            attend(&q, &k, &v, 0.125, &mut Vec::new(), &mut out);
            let s: Vec<f64> = k
                .chunks(hd)
                .map(|k| q.iter().zip(k).map(|(a, b)| (a * b) as f64).sum::<f64>() * 0.125)
                .collect();
            let z: f64 = s.iter().map(|x| x.exp()).sum();
            for c in 0..hd {
                let want: f64 = (0..len)
                    .map(|j| s[j].exp() / z * v[j * hd + c] as f64)
                    .sum();
                assert!((out[c] as f64 - want).abs() < 1e-5, "hd {hd} [{c}]");
            }
        }
    }

    #[test]
    fn unsupported_kinds_and_widths_are_declined() {
        let w = Tensor::from_vec(random(2, 40, 1), (2, 40), &Device::Cpu).unwrap();
        let f = QTensor::quantize(&w, GgmlDType::F32).unwrap();
        assert!(QMatrix::from_qtensor(&f).unwrap().is_none());
    }
}
