//! One query head's attention over a cached run of keys and values: scores, softmax, weighted
//! sum, with AVX2 kernels for the two products.
use super::has_avx2;
use super::vector::{axpy, dot, exp};

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
    for s in scores.iter_mut() {
        *s -= max;
    }
    exp(scores);
    let sum: f32 = scores.iter().sum();
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Scores and weighted sum with 32 lanes of the head held in registers.
    use super::super::vector::avx2::hsum;
    use std::arch::x86_64::*;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    #[test]
    fn attention_matches_a_plain_softmax() {
        for hd in [64, 24] {
            let len = 37;
            let q = random(hd, 1);
            let k = random(len * hd, 2);
            let v = random(len * hd, 3);
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
}
