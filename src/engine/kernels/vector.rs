//! Row-wise vector operations of the forward pass: dot product, `y += a·x`, RMS norm, rotary
//! embedding, `exp` and the MLP's `silu(gate) · up`.
//!
//! `exp` is a polynomial (Cephes' `expf`: 2ⁿ times a degree-6 polynomial of the remainder,
//! within 2 ulp of the true value) computed 8 lanes at a time with AVX2, the same fused
//! operations one value at a time otherwise, so both give the same bits: libm's `expf` one
//! value at a time was a fifth of a long prompt's prefill (the MLP's silu and the attention's
//! softmax call it once per element and per score).
use rayon::prelude::*;

use super::has_avx2;

/// `silu(gate) · up = gate / (1 + e^−gate) · up`, into `gate`; a long run in parallel.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len());
    const TASK: usize = 1 << 15;
    if gate.len() <= TASK {
        return silu_mul_run(gate, up);
    }
    gate.par_chunks_mut(TASK)
        .zip(up.par_chunks(TASK))
        .for_each(|(g, u)| silu_mul_run(g, u));
}

fn silu_mul_run(gate: &mut [f32], up: &[f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA present; the kernel touches whole groups of 8 within both.
        done = unsafe { avx2::silu_mul(gate, up) };
    }
    for (g, u) in gate[done..].iter_mut().zip(&up[done..]) {
        *g = *g / (1.0 + exp1(-*g)) * u;
    }
}

/// `x = eˣ` in place.
pub fn exp(x: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2/FMA present; the kernel touches whole groups of 8 within `x`.
        done = unsafe { avx2::exp(x) };
    }
    for v in &mut x[done..] {
        *v = exp1(*v);
    }
}

/// Cephes' `expf` constants: `ln 2` in two parts, the polynomial's coefficients, the
/// arguments beyond which 2ⁿ leaves the normal range.
const EXP_HI: f32 = 88.0;
const EXP_LO: f32 = -87.33654;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];

/// One `exp`, by the same operations as a lane of the AVX2 kernel.
fn exp1(x: f32) -> f32 {
    let x = x.min(EXP_HI).max(EXP_LO);
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
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

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    //! AVX2 dot product, `exp`, silu, and the horizontal sum the attention kernels share.
    use super::{EXP_HI, EXP_LO, EXP_POLY, LN2_HI, LN2_LO, LOG2E};
    use std::arch::x86_64::*;

    /// `exp` of 8 lanes: [`super::exp1`]'s operations.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let x = _mm256_max_ps(
            _mm256_min_ps(x, _mm256_set1_ps(EXP_HI)),
            _mm256_set1_ps(EXP_LO),
        );
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(
            _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
            _mm256_set1_ps(1.0),
        );
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    /// `x = eˣ` over the whole groups of 8 of `x`; returns how many it did.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn exp(x: &mut [f32]) -> usize {
        let n = x.len() / 8 * 8;
        let p = x.as_mut_ptr();
        for i in (0..n).step_by(8) {
            _mm256_storeu_ps(p.add(i), exp8(_mm256_loadu_ps(p.add(i))));
        }
        n
    }

    /// `gate = gate / (1 + e^−gate) · up` over the whole groups of 8; returns how many.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) -> usize {
        let n = gate.len().min(up.len()) / 8 * 8;
        let (g, u) = (gate.as_mut_ptr(), up.as_ptr());
        let (one, sign) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-0.0));
        for i in (0..n).step_by(8) {
            let x = _mm256_loadu_ps(g.add(i));
            let e = exp8(_mm256_xor_ps(x, sign));
            let y = _mm256_mul_ps(
                _mm256_div_ps(x, _mm256_add_ps(one, e)),
                _mm256_loadu_ps(u.add(i)),
            );
            _mm256_storeu_ps(g.add(i), y);
        }
        n
    }

    /// The sum of the eight lanes of `v`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn hsum(v: __m256) -> f32 {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_and_the_kernels_agree() {
        let xs: Vec<f32> = (0..19_777).map(|i| -90.0 + i as f32 * 0.009).collect();
        let mut got = xs.clone();
        exp(&mut got);
        for (x, y) in xs.iter().zip(&got) {
            let want = (*x as f64).exp();
            if *x < EXP_LO {
                // below the normal range: the value at its edge, as small as a float gets
                assert!(*y < 1.2e-38, "exp({x}) = {y}");
                continue;
            }
            let ulp = f32::EPSILON as f64 * want;
            assert!(
                (*y as f64 - want).abs() <= 2.0 * ulp,
                "exp({x}) = {y}, not {want}"
            );
            // the scalar path gives the same bits as the 8-lane one
            assert_eq!(y.to_bits(), exp1(*x).to_bits(), "exp({x})");
        }
        assert!((exp1(0.0) - 1.0).abs() <= f32::EPSILON);
    }

    #[test]
    fn silu_mul_is_gate_times_sigmoid_times_up() {
        let gate: Vec<f32> = (0..100_001)
            .map(|i| (i as f32 * 0.37).sin() * 12.0)
            .collect();
        let up: Vec<f32> = (0..100_001).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut got = gate.clone();
        silu_mul(&mut got, &up);
        for i in 0..gate.len() {
            let g = gate[i] as f64;
            let want = g / (1.0 + (-g).exp()) * up[i] as f64;
            assert!(
                (got[i] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "[{i}]"
            );
            let one = gate[i] / (1.0 + exp1(-gate[i])) * up[i];
            assert_eq!(got[i].to_bits(), one.to_bits(), "[{i}]");
        }
    }
}
