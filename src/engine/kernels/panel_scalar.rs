//! The portable micro-kernels: the AVX2 ones' arithmetic lane by lane (integer dot per block,
//! then the same fused multiply-adds in the same order), so both give the same bits.
use super::q_matrix::f16_at;
use super::x_quant::XQuant;
use super::BLOCK;

/// Q4_1 panel (`x.blocks_per_row()` panel blocks of 160 bytes) times rows `t0..t0+R`.
pub(super) fn q4_1<const R: usize>(panel: &[u8], x: &XQuant, t0: usize) -> [[f32; 8]; R] {
    let nb = x.blocks_per_row();
    let mut out = [[0f32; 8]; R];
    for (r, o) in out.iter_mut().enumerate() {
        for (lane, o) in o.iter_mut().enumerate() {
            let (mut acc, mut off) = (0f32, 0f32);
            for (b, pb) in panel.chunks_exact(160).take(nb).enumerate() {
                let xi = (t0 + r) * nb + b;
                let xq = &x.q[xi * BLOCK..(xi + 1) * BLOCK];
                let mut dot = 0i32;
                for k in 0..4 {
                    for i in 0..4 {
                        let q = pb[32 + 32 * k + 4 * lane + i];
                        dot += (q & 15) as i32 * xq[4 * k + i] as i32;
                        dot += (q >> 4) as i32 * xq[16 + 4 * k + i] as i32;
                    }
                }
                let (dw, mw) = (f16_at(pb, 2 * lane), f16_at(pb, 16 + 2 * lane));
                acc = (dot as f32).mul_add(dw * x.d[xi], acc);
                off = mw.mul_add(x.s[xi], off);
            }
            *o = acc + off;
        }
    }
    out
}

/// Q8_0 panel (`x.blocks_per_row()` panel blocks of 272 bytes) times rows `t0..t0+R`.
pub(super) fn q8_0<const R: usize>(panel: &[u8], x: &XQuant, t0: usize) -> [[f32; 8]; R] {
    let nb = x.blocks_per_row();
    let mut out = [[0f32; 8]; R];
    for (r, o) in out.iter_mut().enumerate() {
        for (lane, o) in o.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (b, pb) in panel.chunks_exact(272).take(nb).enumerate() {
                let xi = (t0 + r) * nb + b;
                let xq = &x.q[xi * BLOCK..(xi + 1) * BLOCK];
                let mut dot = 0i32;
                for k in 0..8 {
                    for i in 0..4 {
                        dot += pb[16 + 32 * k + 4 * lane + i] as i8 as i32 * xq[4 * k + i] as i32;
                    }
                }
                acc = (dot as f32).mul_add(f16_at(pb, 2 * lane) * x.d[xi], acc);
            }
            *o = acc;
        }
    }
    out
}
