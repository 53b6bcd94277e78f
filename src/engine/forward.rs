//! The inference forward pass on plain f32 rows. One pass runs many sequences together, each
//! after its own KV cache (own length, own positions) and each contributing one or more new
//! tokens: the matrix products run over all their rows at once (the weights are read once per
//! pass), rotary embedding and causal attention per sequence at its own positions. Every
//! activation row is computed independently of the rows beside it (the kernels' contract,
//! `kernels::tests::a_row_alone_equals_the_row_in_a_batch`; f32 matrices on candle run one
//! sequence's rows at a time), so a sequence's logits are the same bytes whatever else is in
//! the pass.
use candle_core::{Device, Module, Tensor};
use rayon::prelude::*;

use super::kernels::{self, XQuant};
use super::kv_cache::{self, KvCache, SeqKv};
use super::model::{Linear, Model, ModelError};

type Result<T> = std::result::Result<T, ModelError>;

/// Query positions per attention task: a prompt's rows split so both threads get work.
const ATTN_ROWS: usize = 64;

/// One sequence's part of a ragged pass: a one-sequence cache and the tokens to run after it.
pub struct Step<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
}

/// The input rows of one or more matrix products, quantized once on first use (q, k and v
/// read the same rows, as do gate and up), with the first row of each sequence (`starts`, and
/// the row count last).
struct Act<'a> {
    x: &'a [f32],
    width: usize,
    starts: &'a [usize],
    quantized: Option<XQuant>,
}

impl<'a> Act<'a> {
    fn new(x: &'a [f32], width: usize, starts: &'a [usize]) -> Self {
        Act {
            x,
            width,
            starts,
            quantized: None,
        }
    }
}

impl Linear {
    /// `x · Wᵀ` for the rows of `x`.
    fn apply(&self, act: &mut Act) -> Result<Vec<f32>> {
        let rows = act.x.len() / act.width;
        match self {
            Linear::Quant(w) => {
                let xq = act.quantized.get_or_insert_with(|| {
                    let mut q = XQuant::default();
                    q.quantize(act.x, act.width);
                    q
                });
                let mut out = vec![0f32; rows * w.dims().0];
                w.matmul(xq, &mut out);
                Ok(out)
            }
            // candle's matmul may sum a row differently depending on how many rows it gets, so
            // each sequence's rows go alone: a sequence's output then never depends on what
            // else is in the pass (f32 weights gain nothing from batching across sequences).
            Linear::Candle(m) => {
                let mut out = Vec::new();
                for w in act.starts.windows(2) {
                    let x = &act.x[w[0] * act.width..w[1] * act.width];
                    let x = Tensor::from_slice(x, (w[1] - w[0], act.width), &Device::Cpu)?;
                    out.extend(m.forward(&x)?.flatten_all()?.to_vec1::<f32>()?);
                }
                Ok(out)
            }
        }
    }
}

/// A sequence in a pass: its cache and its new tokens.
type Seq<'a, 'b> = (&'a mut SeqKv, &'b [u32]);

impl Model {
    /// Run `tokens` (batch × seq, u32) after what `cache` holds; returns the logits of the last
    /// position of each sequence (batch × vocab, f32) and extends the cache.
    pub fn forward(&self, tokens: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let ids = tokens.to_vec2::<u32>()?;
        let (b, s) = (ids.len(), ids.first().map_or(0, Vec::len));
        if s == 0 || ids.iter().any(|r| r.len() != s) {
            return Err(ModelError::Input(
                "every sequence needs the same number (> 0) of tokens".into(),
            ));
        }
        if b != cache.batch() {
            if !cache.is_empty() {
                return Err(ModelError::Batch {
                    cache: cache.batch(),
                    input: b,
                });
            }
            cache.reset_batch(b);
        }
        let mut seqs: Vec<Seq> = cache
            .seqs
            .iter_mut()
            .zip(ids.iter().map(Vec::as_slice))
            .collect();
        let logits = self.run(&mut seqs)?;
        Ok(Tensor::from_vec(
            logits,
            (b, self.config.vocab_size),
            &self.device,
        )?)
    }

    /// The ragged pass: each row's tokens after its own one-sequence cache, whatever their
    /// lengths. Returns the logits of each row's last token (`rows × vocab`, row-major) and
    /// extends every cache; on an error no cache has been extended.
    pub fn forward_ragged(&self, rows: &mut [Step]) -> Result<Vec<f32>> {
        if let Some(r) = rows.iter().find(|r| r.cache.batch() != 1) {
            return Err(ModelError::Batch {
                cache: r.cache.batch(),
                input: 1,
            });
        }
        let mut seqs: Vec<Seq> = rows
            .iter_mut()
            .map(|r| (&mut r.cache.seqs[0], r.tokens))
            .collect();
        self.run(&mut seqs)
    }

    fn run(&self, seqs: &mut [Seq]) -> Result<Vec<f32>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        // Run the whole pass on a rayon worker: the kernels' parallel loops then start from a
        // worker instead of handing each of ~200 matrix products per token over from (and
        // back to) this thread, a sleep and a wake-up each time.
        rayon::scope(|_| self.pass(seqs))
    }

    /// The pass itself, on plain f32 rows (`Σ tokens × width`, sequence-major): one token's
    /// step is ~200 matrix products and a few hundred small vector operations, which as
    /// tensor ops would cost more in dispatch and allocation than in arithmetic.
    fn pass(&self, seqs: &mut [Seq]) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, hd) = (c.hidden_size, c.head_dim());
        let (nh, nkv) = (c.num_attention_heads, c.kv_heads());
        let eps = c.rms_norm_eps as f32;
        let max = c.positions();
        // Step offsets of the sequences, and each row's position.
        let mut starts = Vec::with_capacity(seqs.len() + 1);
        let mut pos = Vec::new();
        let mut x = Vec::new();
        for (seq, toks) in seqs.iter() {
            if toks.is_empty() {
                return Err(ModelError::Input(
                    "every sequence needs at least one new token".into(),
                ));
            }
            if seq.len + toks.len() > max {
                return Err(ModelError::TooLong {
                    len: seq.len + toks.len(),
                    max,
                });
            }
            starts.push(pos.len());
            pos.extend(seq.len..seq.len + toks.len());
            for &id in toks.iter() {
                let id = id as usize;
                if id >= c.vocab_size {
                    return Err(ModelError::Input(format!(
                        "token id {id} is outside the vocabulary of {}",
                        c.vocab_size
                    )));
                }
                x.extend_from_slice(&self.embed[id * h..(id + 1) * h]);
            }
        }
        starts.push(pos.len());
        for (seq, toks) in seqs.iter_mut() {
            kv_cache::reserve(seq, seq.len + toks.len(), nkv, hd);
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let mut n = x.clone();
            kernels::rms_norm(&mut n, &layer.attn_norm, eps);
            let mut act = Act::new(&n, h, &starts);
            let mut q = layer.wq.apply(&mut act)?;
            let mut k = layer.wk.apply(&mut act)?;
            let mut v = layer.wv.apply(&mut act)?;
            for (y, b) in [
                (&mut q, &layer.bq),
                (&mut k, &layer.bk),
                (&mut v, &layer.bv),
            ] {
                if let Some(b) = b {
                    y.chunks_exact_mut(b.len()).for_each(|row| add(row, b));
                }
            }
            for ((qr, kr), &p) in q
                .chunks_exact_mut(nh * hd)
                .zip(k.chunks_exact_mut(nkv * hd))
                .zip(&pos)
            {
                let (cos, sin) = (
                    &self.cos[p * hd / 2..(p + 1) * hd / 2],
                    &self.sin[p * hd / 2..(p + 1) * hd / 2],
                );
                for head in qr.chunks_exact_mut(hd).chain(kr.chunks_exact_mut(hd)) {
                    kernels::rope(head, cos, sin, self.rope_interleaved);
                }
            }
            let kw = nkv * hd;
            for (i, (seq, _)) in seqs.iter_mut().enumerate() {
                let (a, b) = (starts[i] * kw, starts[i + 1] * kw);
                kv_cache::write(seq, li, &k[a..b], &v[a..b], nkv, hd);
            }
            let y = self.attention(li, &q, seqs, &starts);
            let o = layer.wo.apply(&mut Act::new(&y, nh * hd, &starts))?;
            add(&mut x, &o);
            let mut n = x.clone();
            kernels::rms_norm(&mut n, &layer.ffn_norm, eps);
            let mut act = Act::new(&n, h, &starts);
            let mut gate = layer.w_gate.apply(&mut act)?;
            let up = layer.w_up.apply(&mut act)?;
            kernels::silu_mul(&mut gate, &up);
            let down = layer
                .w_down
                .apply(&mut Act::new(&gate, c.intermediate_size, &starts))?;
            add(&mut x, &down);
        }
        let mut last = Vec::with_capacity(seqs.len() * h);
        for (i, (seq, toks)) in seqs.iter_mut().enumerate() {
            seq.len += toks.len();
            let r = starts[i + 1] - 1;
            last.extend_from_slice(&x[r * h..(r + 1) * h]);
        }
        kernels::rms_norm(&mut last, &self.norm, eps);
        let one_each: Vec<usize> = (0..=seqs.len()).collect();
        self.lm_head.apply(&mut Act::new(&last, h, &one_each))
    }

    /// Causal attention of each sequence's new positions over its cache for `layer` (which
    /// already holds them); query heads share kv heads in groups (GQA), read in place.
    fn attention(&self, layer: usize, q: &[f32], seqs: &[Seq], starts: &[usize]) -> Vec<f32> {
        let c = &self.config;
        let (nh, hd, nkv) = (c.num_attention_heads, c.head_dim(), c.kv_heads());
        let n_rep = nh / nkv;
        let scale = 1.0 / (hd as f32).sqrt();
        // Tasks: (sequence, head, first query row); each a run of up to ATTN_ROWS rows.
        let mut tasks = Vec::new();
        for (i, (_, toks)) in seqs.iter().enumerate() {
            for head in 0..nh {
                for r in (0..toks.len()).step_by(ATTN_ROWS) {
                    tasks.push((i, head, r));
                }
            }
        }
        let outs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(i, head, r0)| {
                let (seq, toks) = &seqs[i];
                // The new keys are written at `len..`; `len` moves only after the pass.
                let pos = seq.len;
                let (keys, vals) = &seq.layers[layer];
                let base = (head / n_rep) * seq.cap * hd;
                let rows = r0..(r0 + ATTN_ROWS).min(toks.len());
                let mut out = vec![0f32; rows.len() * hd];
                let mut scores = Vec::new();
                for (o, r) in out.chunks_exact_mut(hd).zip(rows) {
                    let n = (pos + r + 1) * hd;
                    let at = (starts[i] + r) * nh * hd + head * hd;
                    kernels::attend(
                        &q[at..at + hd],
                        &keys[base..base + n],
                        &vals[base..base + n],
                        scale,
                        &mut scores,
                        o,
                    );
                }
                out
            })
            .collect();
        let mut y = vec![0f32; q.len()];
        for (&(i, head, r0), out) in tasks.iter().zip(&outs) {
            for (k, o) in out.chunks_exact(hd).enumerate() {
                let at = (starts[i] + r0 + k) * nh * hd + head * hd;
                y[at..at + hd].copy_from_slice(o);
            }
        }
        y
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixture::write_tiny_model;
    use crate::engine::model::{load, WeightMode};

    /// A one-sequence cache holding `text`'s prefill.
    fn prefilled(m: &Model, text: &str) -> KvCache {
        let ids = m.encode(text).unwrap();
        let mut c = KvCache::new(m);
        m.forward_ragged(&mut [Step {
            cache: &mut c,
            tokens: &ids,
        }])
        .unwrap();
        c
    }

    /// Sequences at different positions, each adding a different number of tokens, in one
    /// pass: each one's logits and cache are the same bytes as when it runs alone.
    #[test]
    fn ragged_rows_equal_each_sequence_alone() {
        for mode in [WeightMode::Auto, WeightMode::Q4_0, WeightMode::F32] {
            let t = tempfile::tempdir().unwrap();
            write_tiny_model(t.path(), 3).unwrap();
            let m = load(t.path(), mode).unwrap();
            let heads = [
                "a",
                "Tell me the story of the tortoise and the hare.",
                "Score: 3",
            ];
            let news: [&[u32]; 3] = [&[40], &[41, 42, 43, 44, 45], &[46, 47]];
            let mut together: Vec<KvCache> = heads.iter().map(|h| prefilled(&m, h)).collect();
            let mut alone: Vec<KvCache> = heads.iter().map(|h| prefilled(&m, h)).collect();
            let mut rows: Vec<Step> = together
                .iter_mut()
                .zip(news)
                .map(|(cache, tokens)| Step { cache, tokens })
                .collect();
            let all = m.forward_ragged(&mut rows).unwrap();
            let v = m.config.vocab_size;
            for (i, (cache, tokens)) in alone.iter_mut().zip(news).enumerate() {
                let one = m.forward_ragged(&mut [Step { cache, tokens }]).unwrap();
                assert_eq!(one, all[i * v..(i + 1) * v], "{mode:?} sequence {i}");
            }
            // The caches hold the same keys and values: one more step agrees too.
            for (i, (a, b)) in together.iter_mut().zip(&mut alone).enumerate() {
                assert_eq!(a.len(), b.len());
                let x = m
                    .forward_ragged(&mut [Step {
                        cache: a,
                        tokens: &[9],
                    }])
                    .unwrap();
                let y = m
                    .forward_ragged(&mut [Step {
                        cache: b,
                        tokens: &[9],
                    }])
                    .unwrap();
                assert_eq!(x, y, "{mode:?} sequence {i} after");
            }
        }
    }

    #[test]
    fn ragged_input_errors_leave_the_caches_as_they_were() {
        let t = tempfile::tempdir().unwrap();
        write_tiny_model(t.path(), 3).unwrap();
        let m = load(t.path(), WeightMode::Auto).unwrap();
        let (mut a, mut b) = (prefilled(&m, "hello"), prefilled(&m, "hi"));
        let (la, lb) = (a.len(), b.len());
        let long = vec![5u32; m.config.positions()];
        let err = m
            .forward_ragged(&mut [
                Step {
                    cache: &mut a,
                    tokens: &[7],
                },
                Step {
                    cache: &mut b,
                    tokens: &long,
                },
            ])
            .unwrap_err();
        assert!(matches!(err, ModelError::TooLong { .. }), "{err}");
        let err = m
            .forward_ragged(&mut [Step {
                cache: &mut a,
                tokens: &[],
            }])
            .unwrap_err();
        assert!(matches!(err, ModelError::Input(_)), "{err}");
        assert_eq!((a.len(), b.len()), (la, lb));
        let mut batch = KvCache::new(&m).repeat(2).unwrap();
        let err = m
            .forward_ragged(&mut [Step {
                cache: &mut batch,
                tokens: &[7],
            }])
            .unwrap_err();
        assert!(matches!(err, ModelError::Batch { .. }), "{err}");
    }
}
