//! Quantized weight matrices and their product with quantized activations, `out = x · Wᵀ`.
//!
//! Layout: GGML's Q4_1 / Q8_0 blocks (as a GGUF stores them) are repacked at load into
//! *panels* of 8 rows. A panel block holds the 8 rows' scales side by side, then their values
//! interleaved in 4-byte groups, so one 32-byte load gives the same group of all 8 rows and
//! the micro-kernels keep one output per lane (see `panel_avx2`). The bytes are the GGUF's, in
//! another order: the same size in memory, and exactly the same values.
//!
//! The product is tiled: each task takes a run of panels; it walks the activation rows in
//! blocks that stay in L1, and for each panel multiplies up to four rows per micro-kernel call,
//! so a weight block is unpacked once for four rows and read from memory once per block of
//! rows. Every output element gets the same operations in the same order whatever the tile,
//! the number of rows or the thread count, so a row's result never depends on its neighbours.
use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;

use super::x_quant::XQuant;
use super::{panel_scalar, Isa};

/// Values per block, for every supported kind.
pub const BLOCK: usize = 32;
/// Weight rows per panel: one 32-bit lane each in an AVX2 register.
const PANEL: usize = 8;
/// Activation rows per micro-kernel call.
const TILE: usize = 4;
/// Bytes of activation rows a task keeps in L1 while it walks its panels.
const ROW_BLOCK_BYTES: usize = 20 * 1024;

/// How a matrix's blocks are laid out in the GGUF (GGML's own byte layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QKind {
    /// `d: f16, m: f16, qs: [u8; 16]`; value `i` = `d·q + m`, `q` the low nibbles of `qs` for
    /// `i < 16`, the high ones after.
    Q4_1,
    /// `d: f16, qs: [i8; 32]`; value = `d·q`.
    Q8_0,
}

impl QKind {
    /// One GGML block's bytes.
    fn block_bytes(self) -> usize {
        match self {
            QKind::Q4_1 => 20,
            QKind::Q8_0 => 34,
        }
    }

    /// One panel block's bytes: 8 rows × one block.
    fn panel_block_bytes(self) -> usize {
        PANEL * self.block_bytes()
    }
}

/// A weight matrix of `rows × cols` in quantized blocks, in panels of 8 rows (the last one
/// padded with zero rows).
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
        let (kind, ggml) = match q.dtype() {
            GgmlDType::Q4_1 => (QKind::Q4_1, bytes),
            GgmlDType::Q8_0 => (QKind::Q8_0, bytes),
            GgmlDType::Q4_0 => (QKind::Q4_1, q4_0_as_q4_1(&bytes).into()),
            _ => return Ok(None),
        };
        let want = rows * cols / BLOCK * kind.block_bytes();
        if ggml.len() != want {
            candle_core::bail!(
                "{:?} matrix {rows}×{cols} holds {} bytes, not {want}",
                q.dtype(),
                ggml.len(),
            );
        }
        Ok(Some(QMatrix {
            kind,
            rows,
            cols,
            data: to_panels(kind, rows, cols, &ggml),
        }))
    }

    pub fn kind(&self) -> QKind {
        self.kind
    }

    /// `(rows, cols)`: output width × input width.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// One panel's bytes.
    fn panel_bytes(&self) -> usize {
        self.cols / BLOCK * self.kind.panel_block_bytes()
    }

    /// Row `j` as f32: the tests' reference for the kernels.
    #[cfg(test)]
    pub(super) fn dequantize_row(&self, j: usize, out: &mut [f32]) {
        let (p, lane) = (j / PANEL, j % PANEL);
        let panel = &self.data[p * self.panel_bytes()..(p + 1) * self.panel_bytes()];
        for (b, pb) in panel
            .chunks_exact(self.kind.panel_block_bytes())
            .enumerate()
        {
            let o = &mut out[b * BLOCK..(b + 1) * BLOCK];
            let d = f16_at(pb, 2 * lane);
            match self.kind {
                QKind::Q4_1 => {
                    let m = f16_at(pb, 16 + 2 * lane);
                    for k in 0..4 {
                        for i in 0..4 {
                            let q = pb[32 + 32 * k + 4 * lane + i];
                            o[4 * k + i] = d * (q & 15) as f32 + m;
                            o[16 + 4 * k + i] = d * (q >> 4) as f32 + m;
                        }
                    }
                }
                QKind::Q8_0 => {
                    for (i, o) in o.iter_mut().enumerate() {
                        *o = d * pb[16 + 32 * (i / 4) + 4 * lane + i % 4] as i8 as f32;
                    }
                }
            }
        }
    }

    /// `out[t·rows + j] = Σ_c x[t][c] · W[j][c]` for the `x.len()` quantized rows of `x`.
    pub fn matmul(&self, x: &XQuant, out: &mut [f32]) {
        self.product(Isa::best(), x, out)
    }

    /// [`Self::matmul`] on the kernels of one instruction set.
    fn product(&self, isa: Isa, x: &XQuant, out: &mut [f32]) {
        assert_eq!(x.cols, self.cols, "activation width vs matrix width");
        let (m, n) = (x.len(), self.rows);
        assert!(out.len() >= m * n, "output buffer too small");
        let panels = n.div_ceil(PANEL);
        // A few tasks per thread balances the load; each is a run of whole panels.
        let chunk = panels.div_ceil(rayon::current_num_threads() * 4);
        let row_block = row_block(self.cols);
        let dst = OutPtr(out.as_mut_ptr());
        (0..panels.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let task = c * chunk..((c + 1) * chunk).min(panels);
            for t0 in (0..m).step_by(row_block) {
                let rows = t0..(t0 + row_block).min(m);
                for p in task.clone() {
                    let mut t = rows.start;
                    while t + TILE <= rows.end {
                        self.tile::<TILE>(isa, p, x, t, dst);
                        t += TILE;
                    }
                    match rows.end - t {
                        0 => {}
                        1 => self.tile::<1>(isa, p, x, t, dst),
                        2 => self.tile::<2>(isa, p, x, t, dst),
                        _ => self.tile::<3>(isa, p, x, t, dst),
                    }
                }
            }
        });
    }

    /// Panel `p` times activation rows `t0..t0+R`, written to `dst` (`x.len() × rows`).
    #[inline]
    fn tile<const R: usize>(&self, isa: Isa, p: usize, x: &XQuant, t0: usize, dst: OutPtr) {
        let pb = self.panel_bytes();
        let panel = &self.data[p * pb..(p + 1) * pb];
        assert!(t0 + R <= x.len());
        let v = self.micro::<R>(isa, panel, x, t0);
        let (j0, n) = (p * PANEL, self.rows);
        let width = (n - j0).min(PANEL);
        for (r, row) in v.iter().enumerate() {
            for (l, &y) in row[..width].iter().enumerate() {
                dst.put((t0 + r) * n + j0 + l, y);
            }
        }
    }

    #[inline]
    fn micro<const R: usize>(
        &self,
        isa: Isa,
        panel: &[u8],
        x: &XQuant,
        t0: usize,
    ) -> [[f32; PANEL]; R] {
        #[cfg(target_arch = "x86_64")]
        {
            use super::panel_avx2 as k;
            let p = panel.as_ptr();
            // SAFETY: `Isa::best` checked the CPU for the set (the tests ask only for what
            // it has); `panel` is one whole panel of `x.blocks_per_row()` blocks (the widths
            // were asserted equal) and `tile` asserted `t0 + R <= x.len()`.
            unsafe {
                match (isa, self.kind) {
                    (Isa::Avx2, QKind::Q4_1) => return k::q4_1::<R>(p, x, t0),
                    (Isa::Avx2, QKind::Q8_0) => return k::q8_0::<R>(p, x, t0),
                    (Isa::Vnni, QKind::Q4_1) => return k::q4_1_vnni::<R>(p, x, t0),
                    (Isa::Vnni, QKind::Q8_0) => return k::q8_0_vnni::<R>(p, x, t0),
                    (Isa::Scalar, _) => {}
                }
            }
        }
        match self.kind {
            QKind::Q4_1 => panel_scalar::q4_1::<R>(panel, x, t0),
            QKind::Q8_0 => panel_scalar::q8_0::<R>(panel, x, t0),
        }
    }
}

/// Activation rows of width `cols` walked per pass over a task's panels: as many as stay in L1
/// beside one panel (the quantized values plus two f32 per block), a whole number of tiles.
fn row_block(cols: usize) -> usize {
    let row_bytes = cols + 8 * (cols / BLOCK);
    (ROW_BLOCK_BYTES / row_bytes).max(TILE) / TILE * TILE
}

/// GGML blocks (`rows × cols/32`, row-major) repacked into panels: per panel and block, the 8
/// rows' `d` (and Q4_1's `m`) side by side, then each 4-byte group of `qs` for the 8 rows in
/// turn. Q4_1's byte `i` holds values `i` and `i + 16`, so its four groups carry all 32.
fn to_panels(kind: QKind, rows: usize, cols: usize, ggml: &[u8]) -> Vec<u8> {
    let (nb, bb, pbb) = (cols / BLOCK, kind.block_bytes(), kind.panel_block_bytes());
    let mut out = vec![0u8; rows.div_ceil(PANEL) * nb * pbb];
    for j in 0..rows {
        let (p, lane) = (j / PANEL, j % PANEL);
        for b in 0..nb {
            let blk = &ggml[(j * nb + b) * bb..(j * nb + b + 1) * bb];
            let dst = &mut out[(p * nb + b) * pbb..(p * nb + b + 1) * pbb];
            let (scales, qs) = match kind {
                QKind::Q4_1 => (2, &blk[4..]),
                QKind::Q8_0 => (1, &blk[2..]),
            };
            for s in 0..scales {
                dst[16 * s + 2 * lane..16 * s + 2 * lane + 2]
                    .copy_from_slice(&blk[2 * s..2 * s + 2]);
            }
            for (k, group) in qs.chunks_exact(4).enumerate() {
                let at = 16 * scales + 32 * k + 4 * lane;
                dst[at..at + 4].copy_from_slice(group);
            }
        }
    }
    out
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

pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Output pointer shared by the panel tasks; each writes disjoint elements.
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

#[cfg(test)]
#[path = "q_matrix_tests.rs"]
mod tests;
