//! srlm's inference kernels: `out = x · Wᵀ` with `W` held in GGML's Q4_1 or Q8_0 blocks (as a
//! GGUF stores them, repacked at load into panels of 8 rows) and `x` quantized on the fly to
//! 8-bit blocks, the scheme llama.cpp uses; plus the row-wise vector operations and the
//! attention of the forward pass. candle 0.11 has no SIMD kernel for Q4_1 on x86 and spends a
//! third of a decode step in its thread pool's barrier; these kernels use AVX2 (`maddubs`) where
//! the CPU has it, a scalar loop otherwise (`SRLM_NO_SIMD=1` forces it), and rayon over
//! output rows.
//!
//! - [`QMatrix`] (`q_matrix`): the weights, their panel layout and the tiled product.
//! - [`XQuant`] (`x_quant`): the activations quantized to 8-bit blocks.
//! - `panel_avx2` / `panel_scalar`: the micro-kernels, one panel × up to four activation rows.
//! - [`attend`] (`attention`) and `vector` ([`dot`], [`axpy`], [`rms_norm`], [`rope`], [`exp`],
//!   [`silu_mul`]).
mod attention;
#[cfg(target_arch = "x86_64")]
mod panel_avx2;
mod panel_scalar;
mod q_matrix;
mod vector;
mod x_quant;

pub use attention::attend;
pub use q_matrix::{QKind, QMatrix, BLOCK};
pub use vector::{axpy, dot, exp, rms_norm, rope, silu_mul};
pub use x_quant::XQuant;

/// The instruction set the quantized products run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Scalar,
    Avx2,
    /// AVX2 with AVX-512 VNNI's `vpdpbusd` on 256-bit registers.
    Vnni,
}

impl Isa {
    /// The fastest this CPU has (`SRLM_NO_SIMD` / `SRLM_NO_AVX512` rule AVX2 / VNNI out).
    fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            return if panel_avx2::has_vnni() {
                Isa::Vnni
            } else {
                Isa::Avx2
            };
        }
        Isa::Scalar
    }
}

/// Whether the AVX2 kernels run: the CPU has AVX2, FMA and F16C and `SRLM_NO_SIMD` is unset.
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
