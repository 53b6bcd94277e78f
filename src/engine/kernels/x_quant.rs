//! Activation rows quantized to 8-bit blocks, as llama.cpp quantizes them for its Q4_1 / Q8_0
//! products. The AVX2 quantizer gives exactly the scalar one's bytes (same scale, same
//! rounding: half away from zero), so results do not depend on which one ran.
use rayon::prelude::*;

use super::{has_avx2, BLOCK};

/// Activation rows quantized to 8-bit blocks: per block a scale `d`, 32 values `q` with
/// `x ≈ d·q`, and `s = d·Σq` (which the Q4_1 kernel needs for the blocks' offsets).
#[derive(Default)]
pub struct XQuant {
    pub(super) cols: usize,
    pub(super) rows: usize,
    pub(super) q: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) s: Vec<f32>,
}

/// Rows quantized per parallel task: below this a prompt's rows are not worth splitting.
const ROWS_PER_TASK: usize = 16;

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
        let simd = has_avx2();
        let task = ROWS_PER_TASK * cols;
        let bpt = task / BLOCK;
        let work = |((x, q), (d, s)): ((&[f32], &mut [i8]), (&mut [f32], &mut [f32]))| {
            let blocks = x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK));
            for (b, (xs, qs)) in blocks.enumerate() {
                let (scale, sum) = quantize_block(simd, xs, qs);
                d[b] = scale;
                s[b] = scale * sum as f32;
            }
        };
        if self.rows <= ROWS_PER_TASK {
            work(((x, &mut self.q), (&mut self.d, &mut self.s)));
        } else {
            x.par_chunks(task)
                .zip(self.q.par_chunks_mut(task))
                .zip(self.d.par_chunks_mut(bpt).zip(self.s.par_chunks_mut(bpt)))
                .for_each(work);
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub(super) fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }
}

/// One block: `q = round(x / d)` with `d = max|x| / 127`; returns `d` and `Σq`.
#[inline]
fn quantize_block(simd: bool, xs: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: AVX2 present (`has_avx2`); `xs` is one block of 32.
            unsafe { avx2::amax(xs) }
        } else {
            xs.iter().fold(0f32, |a, v| a.max(v.abs()))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = simd;
            xs.iter().fold(0f32, |a, v| a.max(v.abs()))
        }
    };
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: as above; `q` is one block of 32.
        return (d, unsafe { avx2::round(xs, id, q) });
    }
    let mut sum = 0i32;
    for (q, v) in q.iter_mut().zip(xs) {
        *q = (v * id).round() as i8;
        sum += *q as i32;
    }
    (d, sum)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The block quantizer in AVX2: the same products and roundings as the scalar loop.
    use std::arch::x86_64::*;

    /// `max |x|` over one block.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn amax(xs: &[f32]) -> f32 {
        assert!(xs.len() == 32);
        let p = xs.as_ptr();
        let sign = _mm256_set1_ps(-0.0);
        let a = |i| _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(i)));
        let m = _mm256_max_ps(_mm256_max_ps(a(0), a(8)), _mm256_max_ps(a(16), a(24)));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    /// `q = round(x · id)` (half away from zero, as `f32::round`) over one block; returns `Σq`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn round(xs: &[f32], id: f32, q: &mut [i8]) -> i32 {
        assert!(xs.len() == 32 && q.len() == 32);
        let p = xs.as_ptr();
        let (scale, half, sign) = (
            _mm256_set1_ps(id),
            _mm256_set1_ps(0.5),
            _mm256_set1_ps(-0.0),
        );
        let one = _mm256_set1_ps(1.0);
        let r = |i| {
            let v = _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), scale);
            let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            // `v − t` is exact; a fraction of one half or more rounds away from zero.
            let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
            let up = _mm256_cmp_ps(frac, half, _CMP_GE_OQ);
            let step = _mm256_or_ps(_mm256_and_ps(v, sign), one);
            _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)))
        };
        let (a, b, c, d) = (r(0), r(8), r(16), r(24));
        let sum = _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(c, d));
        let packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, ordered);
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_avx2_quantizer_gives_the_scalar_bytes() {
        if !has_avx2() {
            eprintln!("skipping: no AVX2");
            return;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        for case in 0..200 {
            let mut xs: Vec<f32> = (0..32).map(|_| rng.gen_range(-3.0..3.0)).collect();
            // halves and exact maxima: where rounding modes differ
            if case % 3 == 0 {
                // scale 1: every value a half-way case
                for (i, v) in xs.iter_mut().enumerate() {
                    *v = i as f32 - 16.5;
                }
                xs[5] = 127.0;
            }
            if case == 1 {
                xs.fill(0.0);
            }
            let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
            let sa = quantize_block(true, &xs, &mut a);
            let sb = quantize_block(false, &xs, &mut b);
            assert_eq!(
                (a, sa.0.to_bits(), sa.1),
                (b, sb.0.to_bits(), sb.1),
                "case {case}"
            );
        }
    }
}
