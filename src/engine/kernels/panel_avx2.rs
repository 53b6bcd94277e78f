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
//!
//! Where the CPU has AVX-512 VNNI (with VL), `vpdpbusd` does `maddubs`, `madd` and the add in
//! one instruction on the same 256-bit registers. The integer sums are exact either way, so
//! both instruction sets give the same bits.
use std::arch::x86_64::*;

use super::x_quant::XQuant;
use super::BLOCK;

/// Unsigned × signed byte products summed into 32-bit lanes, by one instruction set.
trait BytesDot {
    /// `acc + Σ` over each 4-byte group of `w · x`, `w` at most 15: Q4_1's running sum.
    unsafe fn add4(acc: __m256i, w: __m256i, x: __m256i) -> __m256i;
    /// Q4_1's running sum as eight 32-bit sums.
    unsafe fn widen4(acc: __m256i) -> __m256i;
    /// `acc + Σ` over each 4-byte group of `w · x`, any unsigned `w`: a 32-bit running sum.
    unsafe fn add8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i;
}

/// AVX2: `maddubs` into 16-bit sums (exact for Q4_1: 8 pair sums of at most 2·15·127), widened
/// by `madd` once per block; Q8_0's pair sums reach 2·127·127, so they are widened each time.
struct Avx2;

impl BytesDot for Avx2 {
    #[inline(always)]
    unsafe fn add4(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, x))
    }
    #[inline(always)]
    unsafe fn widen4(acc: __m256i) -> __m256i {
        _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
    }
    #[inline(always)]
    unsafe fn add8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
        _mm256_add_epi32(acc, p)
    }
}

/// AVX-512 VNNI on 256-bit registers: `vpdpbusd` sums straight into 32 bits.
struct Vnni;

impl BytesDot for Vnni {
    #[inline(always)]
    unsafe fn add4(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, w, x)
    }
    #[inline(always)]
    unsafe fn widen4(acc: __m256i) -> __m256i {
        acc
    }
    #[inline(always)]
    unsafe fn add8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, w, x)
    }
}

/// Whether the VNNI kernels run: AVX-512 VNNI and VL present and `SRLM_NO_AVX512` unset.
pub(super) fn has_vnni() -> bool {
    static VNNI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VNNI.get_or_init(|| {
        std::env::var_os("SRLM_NO_AVX512").is_none()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
    })
}

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
#[inline(always)]
unsafe fn q4_1_with<D: BytesDot, const R: usize>(
    panel: *const u8,
    x: &XQuant,
    t0: usize,
) -> [[f32; 8]; R] {
    let nb = x.blocks_per_row();
    let (xq, xd, xs) = (x.q.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
    let low = _mm256_set1_epi8(0x0F);
    let (mut acc, mut off) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
    for b in 0..nb {
        let pb = panel.add(b * 160);
        let (dw, mw) = (f16x8(pb), f16x8(pb.add(16)));
        let mut sum = [_mm256_setzero_si256(); R];
        for k in 0..4 {
            let v = _mm256_loadu_si256(pb.add(32 + 32 * k) as *const __m256i);
            let lo = _mm256_and_si256(v, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
            for (r, s) in sum.iter_mut().enumerate() {
                let xb = xq.add(((t0 + r) * nb + b) * BLOCK);
                *s = D::add4(*s, lo, splat4(xb.add(4 * k)));
                *s = D::add4(*s, hi, splat4(xb.add(16 + 4 * k)));
            }
        }
        for r in 0..R {
            let xi = (t0 + r) * nb + b;
            let dot = _mm256_cvtepi32_ps(D::widen4(sum[r]));
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
/// groups) times activation rows `t0..t0+R`. The byte products need one unsigned operand:
/// the weights' absolute values, with their signs moved onto the activations.
#[inline(always)]
unsafe fn q8_0_with<D: BytesDot, const R: usize>(
    panel: *const u8,
    x: &XQuant,
    t0: usize,
) -> [[f32; 8]; R] {
    let nb = x.blocks_per_row();
    let (xq, xd) = (x.q.as_ptr(), x.d.as_ptr());
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
                *s = D::add8(*s, aw, _mm256_sign_epi8(splat4(xb.add(4 * k)), w));
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

/// Q4_1 panel times rows `t0..t0+R` on AVX2.
///
/// # Safety
/// AVX2, FMA and F16C present; `panel` holds `x.blocks_per_row()` panel blocks; `t0 + R <=
/// x.len()`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1<const R: usize>(
    panel: *const u8,
    x: &XQuant,
    t0: usize,
) -> [[f32; 8]; R] {
    q4_1_with::<Avx2, R>(panel, x, t0)
}

/// Q8_0 panel times rows `t0..t0+R` on AVX2.
///
/// # Safety
/// As for [`q4_1`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0<const R: usize>(
    panel: *const u8,
    x: &XQuant,
    t0: usize,
) -> [[f32; 8]; R] {
    q8_0_with::<Avx2, R>(panel, x, t0)
}

/// [`q4_1`] with `vpdpbusd`.
///
/// # Safety
/// As for [`q4_1`], and AVX-512 VNNI and VL present ([`has_vnni`]).
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) unsafe fn q4_1_vnni<const R: usize>(
    panel: *const u8,
    x: &XQuant,
    t0: usize,
) -> [[f32; 8]; R] {
    q4_1_with::<Vnni, R>(panel, x, t0)
}

/// [`q8_0`] with `vpdpbusd`.
///
/// # Safety
/// As for [`q4_1_vnni`].
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
pub(super) unsafe fn q8_0_vnni<const R: usize>(
    panel: *const u8,
    x: &XQuant,
    t0: usize,
) -> [[f32; 8]; R] {
    q8_0_with::<Vnni, R>(panel, x, t0)
}
