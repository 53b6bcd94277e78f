//! The AVX2 micro-kernels: one panel (8 weight rows, interleaved in 4-byte groups as
//! [`super::q_matrix`] lays them out) times up to `R` activation rows, over the whole width.
//!
//! One register holds the same 4-value group of all 8 weight rows; the 4 activation values
//! it meets are broadcast, so `maddubs` (unsigned × signed bytes into 16-bit pair sums) and
//! `madd` leave each row's integer dot product in its own 32-bit lane: no horizontal sums,
//! and each block's scales are applied to 8 outputs at once. A weight block is unpacked once
//! and used for every activation row of the call. Each output lane sees the same operations
//! in the same order whatever `R` is and wherever its row sits in the tile, and the same as
//! [`super::panel_scalar`] (whose `mul_add` is this `fmadd`): results are bit-identical.
use std::arch::x86_64::*;

use super::x_quant::XQuant;
use super::BLOCK;

/// 4 bytes of `p` broadcast to the eight 32-bit lanes.
#[inline(always)]
unsafe fn splat4(p: *const i8) -> __m256i {
    _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32))
}

/// Eight f16 at `p` as f32.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// Q4_1 panel at `panel` (`nb` panel blocks of 160 bytes: `d[8]`, `m[8]` as f16, then four
/// 32-byte groups) times activation rows `t0..t0+R`; returns `[row][lane]`.
///
/// # Safety
/// AVX2, FMA and F16C present; `panel` holds `x.blocks_per_row()` panel blocks; `t0 + R <=
/// x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1<const R: usize>(panel: *const u8, x: &XQuant, t0: usize) -> [[f32; 8]; R] {
    let nb = x.blocks_per_row();
    let (xq, xd, xs) = (x.q.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
    let (low, ones) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi16(1));
    let (mut acc, mut off) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
    for b in 0..nb {
        let pb = panel.add(b * 160);
        let (dw, mw) = (f16x8(pb), f16x8(pb.add(16)));
        // 16-bit sums are exact: 8 pair sums of at most 2·15·127 each.
        let mut sum = [_mm256_setzero_si256(); R];
        for k in 0..4 {
            let v = _mm256_loadu_si256(pb.add(32 + 32 * k) as *const __m256i);
            let lo = _mm256_and_si256(v, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
            for (r, s) in sum.iter_mut().enumerate() {
                let xb = xq.add(((t0 + r) * nb + b) * BLOCK);
                let p = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, splat4(xb.add(4 * k))),
                    _mm256_maddubs_epi16(hi, splat4(xb.add(16 + 4 * k))),
                );
                *s = _mm256_add_epi16(*s, p);
            }
        }
        for r in 0..R {
            let xi = (t0 + r) * nb + b;
            let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(sum[r], ones));
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*xd.add(xi)));
            acc[r] = _mm256_fmadd_ps(dot, scale, acc[r]);
            off[r] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*xs.add(xi)), off[r]);
        }
    }
    let mut out = [[0f32; 8]; R];
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), _mm256_add_ps(acc[r], off[r]));
    }
    out
}

/// Q8_0 panel at `panel` (`nb` panel blocks of 272 bytes: `d[8]` as f16, then eight 32-byte
/// groups) times activation rows `t0..t0+R`. `maddubs` needs one unsigned operand: the
/// weights' absolute values, with their signs moved onto the activations.
///
/// # Safety
/// As for [`q4_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0<const R: usize>(panel: *const u8, x: &XQuant, t0: usize) -> [[f32; 8]; R] {
    let nb = x.blocks_per_row();
    let (xq, xd) = (x.q.as_ptr(), x.d.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        let pb = panel.add(b * 272);
        let dw = f16x8(pb);
        let mut sum = [_mm256_setzero_si256(); R];
        for k in 0..8 {
            let w = _mm256_loadu_si256(pb.add(16 + 32 * k) as *const __m256i);
            let aw = _mm256_sign_epi8(w, w);
            for (r, s) in sum.iter_mut().enumerate() {
                let xb = xq.add(((t0 + r) * nb + b) * BLOCK);
                let p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(splat4(xb.add(4 * k)), w));
                *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
            }
        }
        for r in 0..R {
            let xi = (t0 + r) * nb + b;
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*xd.add(xi)));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r]), scale, acc[r]);
        }
    }
    let mut out = [[0f32; 8]; R];
    for r in 0..R {
        _mm256_storeu_ps(out[r].as_mut_ptr(), acc[r]);
    }
    out
}
