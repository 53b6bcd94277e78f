//! Full fine-tuning without an autograd graph: the model's forward pass keeping exactly the
//! activations its backward pass needs, and the backward pass written out by hand.
//!
//! Why: for full fine-tuning the graph is the same every step, and candle's autograd pays
//! for building it anyway — every node's gradient gets a fresh zeroed tensor plus an add,
//! weight gradients go through a gradient store before the optimizer copies them, element-
//! wise ops run on candle's own thread pool beside rayon's matmul workers, and the main
//! thread does the graph bookkeeping while both wait. Here the matrix products go straight to
//! `gemm` (the kernel candle's CPU matmul calls), weight gradients are summed by that gemm
//! into the optimizer's accumulators, and the row-wise ops run on rayon.
//!
//! Memory on long sequences: the tape keeps per layer only what a matrix product would be
//! needed to recompute (~23 KB per token and layer for SmolLM2-135M); the normed inputs and
//! the SwiGLU product are recomputed element-wise, the attention probabilities block by block
//! ([`super::dense_attention`]), and the `rows x vocab` logits exist one vocabulary block at a
//! time ([`super::dense_head`]).
//!
//! Sequences are packed one after another (no padding); attention is per sequence.
//! Every reduction runs in a fixed order, so results are identical at any thread count.
//! [`super::llama::Llama`] with candle's autograd stays the reference: the tests check that
//! both give the same log-probs and gradients. LoRA training still uses that path.
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::config::{ConfigError, ModelConfig, QKV};
use super::dense_head;
use super::dense_ops::*;
pub(crate) use super::dense_ops::{
    causal_softmax_backward_row, causal_softmax_row, log_softmax_in_place, rms_inv,
    rms_norm_backward_row, silu, swiglu_grad,
};
use super::logprob::{Encoded, LogprobError};
use super::lora::{LoraConfig, LoraInit};
use super::weights::Weights;

/// Errors building or running the dense model.
#[derive(Debug, thiserror::Error)]
pub enum DenseError {
    #[error("missing tensor {0}")]
    Missing(String),
    #[error("tensor {name} has shape {got:?}, the config needs {want:?}")]
    Shape {
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("sequence {seq}: {source}")]
    Sequence { seq: usize, source: LogprobError },
    #[error("not supported by the dense trainer: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A projection: its weight's position in [`Dense::params`], its bias's (Qwen2's q/k/v) and,
/// with LoRA, its adapter's A `(rank, in)` and B `(out, rank)`.
#[derive(Debug, Clone, Copy)]
struct Proj {
    w: usize,
    b: Option<usize>,
    lora: Option<(usize, usize)>,
}

/// The projections of a layer in [`LayerIdx::projs`] (and LoRA's initialisation) order.
const PROJS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// Positions in [`Dense::params`] of one layer's tensors.
#[derive(Debug, Clone, Copy)]
struct LayerIdx {
    projs: [Proj; 7],
    ln1: usize,
    ln2: usize,
}

/// A llama's parameters as plain f32 vectors (Hugging Face names; the base's sorted, then
/// LoRA adapters in initialisation order), trainable by hand: every tensor, or with LoRA only
/// the adapters.
pub struct Dense {
    pub cfg: ModelConfig,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    params: Vec<Vec<f32>>,
    /// Which parameters get gradients.
    trained: Vec<bool>,
    /// LoRA's configuration (`alpha / rank` scales the adapters' output); `None`: full.
    lora: Option<LoraConfig>,
    embed: usize,
    norm: usize,
    /// Equal to `embed` when the embeddings are tied.
    lm_head: usize,
    layers: Vec<LayerIdx>,
    /// Rope tables, `(max_positions, head_dim / 2)` row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// One layer's saved activations (rows = packed tokens). What element-wise work recomputes
/// exactly is not kept: the normed inputs (from the residual stream and its rms factors),
/// `silu(gate) * up`, and the attention probabilities (from q, k and the softmax statistics).
pub(super) struct LayerTape {
    /// Input of the layer (residual stream).
    pub(super) x: Vec<f32>,
    inv1: Vec<f32>,
    /// Queries and keys after rope; values.
    pub(super) q: Vec<f32>,
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    /// Each query row's and head's attention softmax statistics.
    pub(super) stats: Vec<SoftmaxStats>,
    /// Attention output before `o_proj`.
    pub(super) y: Vec<f32>,
    /// Per projection (in [`PROJS`] order), with LoRA: its input times A^T.
    pub(super) low: [Option<Vec<f32>>; 7],
    /// Residual stream after attention.
    pub(super) xm: Vec<f32>,
    inv2: Vec<f32>,
    pub(super) gate: Vec<f32>,
    pub(super) up: Vec<f32>,
}

impl LayerTape {
    fn saved(&self) -> super::dense_attention::Saved<'_> {
        super::dense_attention::Saved {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            stats: &self.stats,
        }
    }

    fn bytes(&self) -> usize {
        let f = [
            &self.x, &self.inv1, &self.q, &self.k, &self.v, &self.y, &self.xm, &self.inv2,
            &self.gate, &self.up,
        ];
        let low: usize = self.low.iter().flatten().map(Vec::len).sum();
        4 * (f.iter().map(|v| v.len()).sum::<usize>() + low)
            + std::mem::size_of_val(self.stats.as_slice())
    }
}

/// The packed token rows of a batch of sequences and the rows whose next token is scored.
pub(super) struct Packed {
    pub(super) ids: Vec<u32>,
    /// Sequence `s` is rows `offs[s]..offs[s + 1]`.
    pub(super) offs: Vec<usize>,
    /// Position of each row within its sequence (for rope).
    pub(super) pos: Vec<usize>,
    /// Rows whose hidden state scores a response token, and those tokens.
    pub(super) rows: Vec<usize>,
    pub(super) targets: Vec<u32>,
    /// Response tokens per sequence.
    pub(super) counts: Vec<usize>,
}

/// What [`Dense::forward`] keeps for [`Dense::backward`].
pub struct Tape {
    packed: Packed,
    layers: Vec<LayerTape>,
    /// Last residual stream and its final-norm factors.
    xf: Vec<f32>,
    invf: Vec<f32>,
    /// Final hidden states of the scored rows, and their log-sum-exp over the vocabulary.
    hs: Vec<f32>,
    lse: Vec<f32>,
}

impl Tape {
    /// Bytes of activations kept for the backward pass.
    pub fn bytes(&self) -> usize {
        let p = &self.packed;
        let rows = 4 * (p.ids.len() + p.pos.len() * 2 + p.rows.len() + p.targets.len());
        let f = 4 * (self.xf.len() + self.invf.len() + self.hs.len() + self.lse.len());
        rows + f + self.layers.iter().map(LayerTape::bytes).sum::<usize>()
    }
}

impl Dense {
    /// Whether LoRA with `lc` can train on the dense model (adapters on the lm-head cannot:
    /// its fused log-softmax has no adapter path; the candle model trains those).
    pub fn supports(lc: &LoraConfig) -> bool {
        !lc.targets("lm_head")
    }

    /// Copy the weights (Hugging Face names) into plain vectors, checking every shape; with
    /// `lora`, add adapters (drawn from its seeded RNG in the order [`super::llama::Llama`]
    /// draws them) and train only those.
    pub fn new(
        cfg: &ModelConfig,
        w: &Weights,
        lora: Option<(&LoraConfig, LoraInit)>,
    ) -> Result<Self, DenseError> {
        Self::build(cfg, |n| w.get(n).cloned(), lora)
    }

    /// [`Dense::new`] taking the weights, each freed as soon as it is copied (unless the
    /// caller shares it): the model's memory is not held twice.
    pub fn from_weights(
        cfg: &ModelConfig,
        mut w: Weights,
        lora: Option<(&LoraConfig, LoraInit)>,
    ) -> Result<Self, DenseError> {
        Self::build(cfg, |n| w.0.remove(n), lora)
    }

    fn build(
        cfg: &ModelConfig,
        mut take: impl FnMut(&str) -> Option<Tensor>,
        lora: Option<(&LoraConfig, LoraInit)>,
    ) -> Result<Self, DenseError> {
        if let Some((lc, _)) = lora {
            if !Self::supports(lc) {
                return Err(DenseError::Unsupported(
                    "LoRA on lm_head (trained through candle instead)".into(),
                ));
            }
        }
        cfg.validate()?;
        let mut want = cfg.tensor_shapes();
        // Sorted like `Llama::params`, so both list parameters in one order.
        want.sort();
        let mut names = Vec::with_capacity(want.len());
        let mut shapes = Vec::with_capacity(want.len());
        let mut params = Vec::with_capacity(want.len());
        for (name, shape) in want {
            let t = take(&name).ok_or_else(|| DenseError::Missing(name.clone()))?;
            if t.dims() != shape.as_slice() {
                return Err(DenseError::Shape {
                    name,
                    got: t.dims().to_vec(),
                    want: shape,
                });
            }
            params.push(
                t.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
            names.push(name);
            shapes.push(shape);
        }
        let at = |n: &str| {
            names
                .binary_search_by(|x| x.as_str().cmp(n))
                .expect("listed")
        };
        let bias = cfg.qkv_bias();
        let mut layers: Vec<LayerIdx> = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = |n: &str| at(&format!("model.layers.{l}.{n}.weight"));
                LayerIdx {
                    projs: PROJS.map(|n| Proj {
                        w: p(n),
                        b: (bias && QKV.contains(&n))
                            .then(|| at(&format!("model.layers.{l}.{n}.bias"))),
                        lora: None,
                    }),
                    ln1: p("input_layernorm"),
                    ln2: p("post_attention_layernorm"),
                }
            })
            .collect();
        let embed = at("model.embed_tokens.weight");
        let lm_head = if cfg.tie_word_embeddings {
            embed
        } else {
            at("lm_head.weight")
        };
        let norm = at("model.norm.weight");
        let mut trained = vec![lora.is_none(); params.len()];
        if let Some((lc, init)) = lora {
            let mut rng = init.rng();
            for (l, layer) in layers.iter_mut().enumerate() {
                for (proj, pname) in layer.projs.iter_mut().zip(PROJS) {
                    let name = format!("model.layers.{l}.{pname}");
                    if !lc.targets(&name) {
                        continue;
                    }
                    let (out, inp) = (shapes[proj.w][0], shapes[proj.w][1]);
                    let (a, b) = super::lora::init_pair(lc, inp, out, &mut rng)?;
                    let mut add = |suffix: &str, t: Tensor| -> candle_core::Result<usize> {
                        names.push(format!("{name}.{suffix}"));
                        shapes.push(t.dims().to_vec());
                        params.push(t.flatten_all()?.to_vec1()?);
                        trained.push(true);
                        Ok(params.len() - 1)
                    };
                    proj.lora = Some((add("lora_A.weight", a)?, add("lora_B.weight", b)?));
                }
            }
        }
        let (cos, sin) = super::llama::rope_tables(cfg, &Device::Cpu)?;
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            norm,
            lm_head,
            layers,
            names,
            shapes,
            params,
            trained,
            lora: lora.map(|(lc, _)| lc.clone()),
            cos: cos.flatten_all()?.to_vec1()?,
            sin: sin.flatten_all()?.to_vec1()?,
        })
    }

    /// Element count of each parameter that gets a gradient, in order (0 for frozen ones).
    pub fn sizes(&self) -> Vec<usize> {
        self.params
            .iter()
            .zip(&self.trained)
            .map(|(p, &t)| if t { p.len() } else { 0 })
            .collect()
    }

    /// Parameter names (Hugging Face), in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The parameters, mutable (the optimizer updates them in place).
    pub fn params_mut(&mut self) -> &mut [Vec<f32>] {
        &mut self.params
    }

    /// The current weights as candle tensors (Hugging Face names), adapters merged: what a
    /// full checkpoint stores.
    pub fn weights(&self) -> candle_core::Result<Weights> {
        let base = self.tensors(|n| !n.contains(".lora_"))?;
        match &self.lora {
            None => Ok(base),
            Some(lc) => super::lora::merge(&base, &self.adapter()?, lc),
        }
    }

    /// The LoRA adapter matrices (empty without LoRA): what an adapter checkpoint stores.
    pub fn adapter(&self) -> candle_core::Result<Weights> {
        self.tensors(|n| n.contains(".lora_"))
    }

    fn tensors(&self, keep: impl Fn(&str) -> bool) -> candle_core::Result<Weights> {
        let mut out = std::collections::BTreeMap::new();
        for ((n, s), p) in self.names.iter().zip(&self.shapes).zip(&self.params) {
            if keep(n) {
                let t = Tensor::from_slice(p, s.as_slice(), &Device::Cpu)?;
                out.insert(n.clone(), t);
            }
        }
        Ok(Weights(out))
    }

    /// The response tokens of `ex` (`ids[start..]`), or why they cannot be scored.
    pub fn check(&self, ex: &Encoded) -> Result<usize, LogprobError> {
        super::logprob::check_sequence(&self.cfg, &ex.ids, ex.start)
    }

    fn pack(&self, seqs: &[&Encoded]) -> Result<Packed, DenseError> {
        let mut p = Packed {
            ids: vec![],
            offs: vec![0],
            pos: vec![],
            rows: vec![],
            targets: vec![],
            counts: vec![],
        };
        for (seq, e) in seqs.iter().enumerate() {
            let n = self
                .check(e)
                .map_err(|source| DenseError::Sequence { seq, source })?;
            let off = p.ids.len();
            p.ids.extend_from_slice(&e.ids);
            p.pos.extend(0..e.ids.len());
            p.rows
                .extend((e.start - 1..e.ids.len() - 1).map(|r| off + r));
            p.targets.extend_from_slice(&e.ids[e.start..]);
            p.counts.push(n);
            p.offs.push(p.ids.len());
        }
        Ok(p)
    }

    /// Log-probabilities of each sequence's response tokens (`ids[start..]`), one vector per
    /// sequence, and the tape for [`Dense::backward`] when `keep` is set.
    pub fn forward(
        &self,
        seqs: &[&Encoded],
        keep: bool,
    ) -> Result<(Vec<Vec<f32>>, Option<Tape>), DenseError> {
        let cfg = &self.cfg;
        let packed = self.pack(seqs)?;
        let (n, d, ff) = (packed.ids.len(), cfg.hidden_size, cfg.intermediate_size);
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (qw, kw) = (nh * hd, nkv * hd);
        let eps = cfg.rms_norm_eps as f32;
        let embed = &self.params[self.embed];
        let mut x = vec![0f32; n * d];
        x.par_chunks_mut(d)
            .zip(&packed.ids)
            .for_each(|(row, &id)| row.copy_from_slice(&embed[id as usize * d..][..d]));
        let mut tapes = Vec::with_capacity(if keep { self.layers.len() } else { 0 });
        for li in &self.layers {
            let w = |i: usize| self.params[i].as_slice();
            let mut low: [Option<Vec<f32>>; 7] = Default::default();
            let (inv1, h1) = rms_norm(&x, w(li.ln1), eps);
            let (mut q, mut k, mut v) =
                (vec![0f32; n * qw], vec![0f32; n * kw], vec![0f32; n * kw]);
            low[Q] = self.project(&mut q, &h1, li.projs[Q], n, false);
            low[K] = self.project(&mut k, &h1, li.projs[K], n, false);
            low[V] = self.project(&mut v, &h1, li.projs[V], n, false);
            self.rope(&mut q, nh, &packed.pos, 1.0);
            self.rope(&mut k, nkv, &packed.pos, 1.0);
            let (stats, y) = self.attention(&packed, &q, &k, &v);
            let mut xm = x.clone();
            low[O] = self.project(&mut xm, &y, li.projs[O], n, true);
            let (inv2, h2) = rms_norm(&xm, w(li.ln2), eps);
            let (mut gate, mut up) = (vec![0f32; n * ff], vec![0f32; n * ff]);
            low[GATE] = self.project(&mut gate, &h2, li.projs[GATE], n, false);
            low[UP] = self.project(&mut up, &h2, li.projs[UP], n, false);
            drop(h2);
            let act = swiglu(&gate, &up);
            let mut next = xm.clone();
            low[DOWN] = self.project(&mut next, &act, li.projs[DOWN], n, true);
            drop((h1, act));
            if keep {
                tapes.push(LayerTape {
                    x,
                    inv1,
                    q,
                    k,
                    v,
                    stats,
                    y,
                    low,
                    xm,
                    inv2,
                    gate,
                    up,
                });
            }
            x = next;
        }
        let (invf, hf) = rms_norm(&x, &self.params[self.norm], eps);
        let mut hs = vec![0f32; packed.rows.len() * d];
        hs.par_chunks_mut(d)
            .zip(&packed.rows)
            .for_each(|(dst, &r)| dst.copy_from_slice(&hf[r * d..][..d]));
        drop(hf);
        let cols = dense_head::vocab_block(packed.rows.len(), cfg.vocab_size);
        let (lp, lse) = dense_head::forward(&hs, &self.params[self.lm_head], &packed.targets, cols);
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for &c in &packed.counts {
            out.push(lp[at..at + c].to_vec());
            at += c;
        }
        let tape = keep.then_some(Tape {
            packed,
            layers: tapes,
            xf: x,
            invf,
            hs,
            lse,
        });
        Ok((out, tape))
    }

    /// `dst (+)= x W^T`, plus with an adapter `scale · (x A^T) B^T`; returns `x A^T` for
    /// the backward pass.
    fn project(
        &self,
        dst: &mut [f32],
        x: &[f32],
        p: Proj,
        n: usize,
        accumulate: bool,
    ) -> Option<Vec<f32>> {
        linear_into(dst, x, &self.params[p.w], n, accumulate);
        if let Some(ib) = p.b {
            let b = &self.params[ib];
            dst.par_chunks_mut(b.len()).for_each(|row| {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            });
        }
        let (ia, ib) = p.lora?;
        let scale = self.lora_scale();
        let (a, b) = (&self.params[ia], &self.params[ib]);
        let rank = self.shape_rows(ia);
        let low = linear(x, a, rank);
        let out = dst.len() / n;
        gemm_call(
            Out::rows(dst, n, out),
            View::rows(&low, n, rank),
            View::rows(b, out, rank).t(),
            (true, scale),
            gemm::Parallelism::Rayon(0),
        );
        Some(low)
    }

    fn lora_scale(&self) -> f32 {
        self.lora.as_ref().map_or(1.0, |l| l.scale() as f32)
    }

    /// Rows of parameter `i` (its first dimension).
    fn shape_rows(&self, i: usize) -> usize {
        self.shapes[i][0]
    }

    /// Rotate each head of each row by its position's angles (`sign` -1: the inverse, which is
    /// the rotation's backward pass). Hugging Face's rotate-half layout.
    fn rope(&self, x: &mut [f32], heads: usize, pos: &[usize], sign: f32) {
        let hd = self.cfg.head_dim();
        let half = hd / 2;
        x.par_chunks_mut(heads * hd).zip(pos).for_each(|(row, &p)| {
            let (c, s) = (&self.cos[p * half..][..half], &self.sin[p * half..][..half]);
            for head in row.chunks_exact_mut(hd) {
                let (x1, x2) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b, s) = (x1[i], x2[i], sign * s[i]);
                    x1[i] = a * c[i] - b * s;
                    x2[i] = b * c[i] + a * s;
                }
            }
        });
    }
}

#[path = "dense_backward.rs"]
mod backward;

#[cfg(test)]
#[path = "dense_tests.rs"]
mod tests;
