//! The explicit KV cache of the inference model: per-sequence, per-layer keys and values,
//! forked to share a prompt's prefill across candidates and the judge's prefix. Each sequence
//! has its own length, so a ragged pass ([`super::model::Model::forward_ragged`]) can extend
//! many sequences at different positions together.
use super::model::{Model, ModelError};

type Result<T> = std::result::Result<T, ModelError>;

/// One sequence's keys and values: per layer `kv_heads × cap × head_dim` f32 each. Capacity
/// grows by doubling, so a decode step writes one row instead of copying the whole cache.
#[derive(Clone)]
pub(super) struct SeqKv {
    pub(super) layers: Vec<(Vec<f32>, Vec<f32>)>,
    pub(super) cap: usize,
    pub(super) len: usize,
}

impl SeqKv {
    fn empty(layers: usize) -> Self {
        SeqKv {
            layers: vec![(Vec::new(), Vec::new()); layers],
            cap: 0,
            len: 0,
        }
    }

    /// A copy of the `len` cached positions with capacity `cap` (≥ `len`).
    fn with_cap(&self, cap: usize, kv_heads: usize, head_dim: usize) -> SeqKv {
        let (h, d, len) = (kv_heads, head_dim, self.len);
        let copy = |src: &Vec<f32>| {
            let mut out = vec![0f32; h * cap * d];
            for g in 0..h {
                let (from, to) = (g * self.cap * d, g * cap * d);
                out[to..to + len * d].copy_from_slice(&src[from..from + len * d]);
            }
            out
        };
        SeqKv {
            layers: self
                .layers
                .iter()
                .map(|(k, v)| (copy(k), copy(v)))
                .collect(),
            cap,
            len,
        }
    }
}

/// The cached keys and values of a batch of sequences. [`Model::forward`] extends all of them
/// by the same number of tokens (they share one length); [`Model::forward_ragged`] takes many
/// one-sequence caches of any lengths. There is no `Clone`: use [`KvCache::fork`] for an
/// independent copy with room to grow.
pub struct KvCache {
    pub(super) seqs: Vec<SeqKv>,
    kv_heads: usize,
    head_dim: usize,
}

impl KvCache {
    /// An empty cache (one sequence) for `model`.
    pub fn new(model: &Model) -> Self {
        KvCache {
            seqs: vec![SeqKv::empty(model.config.num_hidden_layers)],
            kv_heads: model.config.kv_heads(),
            head_dim: model.config.head_dim(),
        }
    }

    /// Number of positions cached (of the first sequence; [`Model::forward`] keeps all equal).
    pub fn len(&self) -> usize {
        self.seqs.first().map_or(0, |s| s.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequences in the batch (1 when empty).
    pub fn batch(&self) -> usize {
        self.seqs.len()
    }

    fn with_seqs(&self, seqs: Vec<SeqKv>) -> KvCache {
        KvCache {
            seqs,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }

    /// An independent copy (e.g. of a shared prompt prefix) with room for `extra` more tokens.
    pub fn fork(&self, extra: usize) -> Result<KvCache> {
        let seqs = self
            .seqs
            .iter()
            .map(|s| s.with_cap((s.len + extra).max(16), self.kv_heads, self.head_dim))
            .collect();
        Ok(self.with_seqs(seqs))
    }

    /// The batch-1 cache repeated `n` times (candidates sharing one prompt's prefill).
    pub fn repeat(&self, n: usize) -> Result<KvCache> {
        if self.batch() != 1 {
            return Err(ModelError::Batch {
                cache: self.batch(),
                input: 1,
            });
        }
        Ok(self.with_seqs(vec![self.seqs[0].clone(); n]))
    }

    /// Keep only the sequences at `rows` (candidates still generating).
    pub fn select(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch()) {
            return Err(ModelError::Batch {
                cache: self.batch(),
                input: bad + 1,
            });
        }
        Ok(self.with_seqs(rows.iter().map(|&r| self.seqs[r].clone()).collect()))
    }

    /// Split into one-sequence caches (for a ragged pass).
    pub fn split(self) -> Vec<KvCache> {
        let (h, d) = (self.kv_heads, self.head_dim);
        self.seqs
            .into_iter()
            .map(|s| KvCache {
                seqs: vec![s],
                kv_heads: h,
                head_dim: d,
            })
            .collect()
    }

    /// An empty batch of `batch` sequences in place of this empty cache.
    pub(super) fn reset_batch(&mut self, batch: usize) {
        let layers = self.seqs.first().map_or(0, |s| s.layers.len());
        self.seqs = vec![SeqKv::empty(layers); batch];
    }
}

/// Make room in `seq` for `need` positions.
pub(super) fn reserve(seq: &mut SeqKv, need: usize, kv_heads: usize, head_dim: usize) {
    if need > seq.cap {
        *seq = seq.with_cap(need.next_power_of_two().max(16), kv_heads, head_dim);
    }
}

/// Store `layer`'s keys and values of the new positions of `seq` (rows of `kv_heads·head_dim`),
/// after its `len` cached ones.
pub(super) fn write(
    seq: &mut SeqKv,
    layer: usize,
    k: &[f32],
    v: &[f32],
    kv_heads: usize,
    head_dim: usize,
) {
    let (cap, len, d) = (seq.cap, seq.len, head_dim);
    let (ck, cv) = &mut seq.layers[layer];
    let w = kv_heads * d;
    for (i, (kr, vr)) in k.chunks_exact(w).zip(v.chunks_exact(w)).enumerate() {
        for g in 0..kv_heads {
            let at = (g * cap + len + i) * d;
            ck[at..at + d].copy_from_slice(&kr[g * d..(g + 1) * d]);
            cv[at..at + d].copy_from_slice(&vr[g * d..(g + 1) * d]);
        }
    }
}
