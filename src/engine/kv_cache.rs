//! The explicit KV cache of the inference model: per-layer keys and values of a batch of
//! sequences, forked to share a prompt's prefill across candidates and the judge's prefix.
use super::model::{Model, ModelError};

type Result<T> = std::result::Result<T, ModelError>;

/// Per-layer keys and values of the tokens seen so far, for a batch of sequences of equal
/// length, each layer's held as `batch × kv_heads × capacity × head_dim` f32. Capacity grows by
/// doubling, so a decode step writes one row instead of copying the whole cache. There is no
/// `Clone`: use [`KvCache::fork`] for an independent copy with room to grow.
pub struct KvCache {
    pub(super) layers: Vec<(Vec<f32>, Vec<f32>)>,
    pub(super) batch: usize,
    pub(super) cap: usize,
    pub(super) len: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl KvCache {
    /// An empty cache for `model`.
    pub fn new(model: &Model) -> Self {
        KvCache {
            layers: vec![(Vec::new(), Vec::new()); model.config.num_hidden_layers],
            batch: 1,
            cap: 0,
            len: 0,
            kv_heads: model.config.kv_heads(),
            head_dim: model.config.head_dim(),
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sequences in the batch (1 when empty).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// A copy with `batch` sequences taken from `rows` of this one, and capacity `cap`.
    fn rebuilt(&self, rows: &[usize], cap: usize) -> KvCache {
        let (h, d, len) = (self.kv_heads, self.head_dim, self.len);
        let copy = |src: &Vec<f32>| {
            let mut out = vec![0f32; rows.len() * h * cap * d];
            for (nb, &ob) in rows.iter().enumerate() {
                for g in 0..h {
                    let from = (ob * h + g) * self.cap * d;
                    let to = (nb * h + g) * cap * d;
                    out[to..to + len * d].copy_from_slice(&src[from..from + len * d]);
                }
            }
            out
        };
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (copy(k), copy(v)))
                .collect(),
            batch: rows.len(),
            cap,
            len,
            kv_heads: h,
            head_dim: d,
        }
    }

    /// An independent copy (e.g. of a shared prompt prefix) with room for `extra` more tokens.
    pub fn fork(&self, extra: usize) -> Result<KvCache> {
        let cap = (self.len + extra).next_power_of_two().max(16);
        Ok(self.rebuilt(&(0..self.batch).collect::<Vec<_>>(), cap))
    }

    /// The batch-1 cache repeated `n` times (candidates sharing one prompt's prefill).
    pub fn repeat(&self, n: usize) -> Result<KvCache> {
        if self.batch != 1 {
            return Err(ModelError::Batch {
                cache: self.batch,
                input: 1,
            });
        }
        Ok(self.rebuilt(&vec![0; n], self.cap.max(16)))
    }

    /// Keep only the sequences at `rows` (candidates still generating).
    pub fn select(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch) {
            return Err(ModelError::Batch {
                cache: self.batch,
                input: bad + 1,
            });
        }
        Ok(self.rebuilt(rows, self.cap.max(16)))
    }

    /// Make room for `need` positions of `batch` sequences.
    pub(super) fn reserve(&mut self, batch: usize, need: usize) -> Result<()> {
        if batch != self.batch {
            if self.len > 0 {
                return Err(ModelError::Batch {
                    cache: self.batch,
                    input: batch,
                });
            }
            self.batch = batch;
            self.cap = 0;
        }
        if need > self.cap {
            *self = self.rebuilt(
                &(0..self.batch).collect::<Vec<_>>(),
                need.next_power_of_two().max(16),
            );
        }
        Ok(())
    }

    /// Store `layer`'s keys and values of `s` new positions per sequence (rows of
    /// `kv_heads·head_dim`, sequence-major), after the `len` cached ones.
    pub(super) fn write(&mut self, layer: usize, k: &[f32], v: &[f32], s: usize) {
        let (h, d, cap, len) = (self.kv_heads, self.head_dim, self.cap, self.len);
        let (ck, cv) = &mut self.layers[layer];
        for (r, (kr, vr)) in k.chunks_exact(h * d).zip(v.chunks_exact(h * d)).enumerate() {
            let (b, i) = (r / s, r % s);
            for g in 0..h {
                let at = ((b * h + g) * cap + len + i) * d;
                ck[at..at + d].copy_from_slice(&kr[g * d..(g + 1) * d]);
                cv[at..at + d].copy_from_slice(&vr[g * d..(g + 1) * d]);
            }
        }
    }
}
