//! A trainable llama forward pass whose every op has a backward pass, returning logits at
//! every position or log-probs of chosen tokens.
//!
//! candle-transformers' `llama::Llama` uses fused ops without a backward pass, so gradients
//! reach only the tied embedding; this module exists so that every parameter gets one. The
//! norms, rope, attention softmax, MLP gating and lm-head + log-softmax are fused ops with
//! hand-written backward passes ([`super::grad_ops`]); frozen matrices (the base of a LoRA
//! model, a reference model) are detached, so their weight gradients are never computed.
//!
//! Training itself runs on [`super::dense`] (no graph); this model trains LoRA adapters on
//! the lm-head and is the reference the dense trainer's log-probs and gradients are tested
//! against.
use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var, D};

use super::grad_ops::{causal_softmax, linear, lm_head_logprobs, rms_norm, rope_heads, swiglu};

use super::config::{ModelConfig, QKV};
use super::lora::{LoraConfig, LoraInit};
use super::weights::Weights;

/// Which tensors are trained.
#[derive(Debug, Clone)]
pub enum Trainable {
    /// Nothing (inference, the DPO reference model).
    None,
    /// Every tensor (full fine-tuning).
    All,
    /// Only LoRA matrices on the configured projections; the base stays frozen.
    Lora(LoraConfig, LoraInit),
}

/// A projection `y = x W^T (+ b) (+ scale * x A^T B^T)`.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: Option<(Tensor, Tensor, f64)>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // A frozen weight is a detached tensor: `linear` then skips its gradient.
        let mut y = linear(x, &self.weight)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        match &self.lora {
            None => Ok(y),
            Some((a, b, scale)) => {
                let low = linear(&linear(x, a)?, b)?;
                y + (low * *scale)?
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    ln1: Tensor,
    ln2: Tensor,
}

/// The model: parameters as tensors (backed by `Var`s where trained) and rope tables.
#[derive(Debug, Clone)]
pub struct Llama {
    pub cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    cos: Tensor,
    sin: Tensor,
    /// The trained parameters by name, in a fixed order (HF names; LoRA matrices as
    /// `<proj>.lora_A.weight` / `<proj>.lora_B.weight`).
    pub params: BTreeMap<String, Var>,
}

impl Llama {
    /// Build the model from weights (HF names); `trainable` decides which become `Var`s.
    pub fn new(cfg: &ModelConfig, w: &Weights, trainable: &Trainable) -> candle_core::Result<Self> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let mut params = BTreeMap::new();
        let full = matches!(trainable, Trainable::All);
        let mut take = |name: &str| -> candle_core::Result<Tensor> {
            let t = w
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}")))?
                .to_dtype(DType::F32)?;
            if full {
                let var = Var::from_tensor(&t)?;
                let t = var.as_tensor().clone();
                params.insert(name.to_owned(), var);
                Ok(t)
            } else {
                Ok(t.detach())
            }
        };
        let embed = take("model.embed_tokens.weight")?;
        let norm = take("model.norm.weight")?;
        let lm_head_w = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            take("lm_head.weight")?
        };
        let mut raw_layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut lin = |n: &str| -> candle_core::Result<(String, Tensor, Option<Tensor>)> {
                let name = format!("{p}.{n}");
                let bias = match cfg.qkv_bias() && QKV.contains(&n) {
                    true => Some(take(&format!("{name}.bias"))?),
                    false => None,
                };
                Ok((name.clone(), take(&format!("{name}.weight"))?, bias))
            };
            let projs = [
                lin("self_attn.q_proj")?,
                lin("self_attn.k_proj")?,
                lin("self_attn.v_proj")?,
                lin("self_attn.o_proj")?,
                lin("mlp.gate_proj")?,
                lin("mlp.up_proj")?,
                lin("mlp.down_proj")?,
            ];
            let ln1 = take(&format!("{p}.input_layernorm.weight"))?;
            let ln2 = take(&format!("{p}.post_attention_layernorm.weight"))?;
            raw_layers.push((projs, ln1, ln2));
        }
        let mut lora_rng = match trainable {
            Trainable::Lora(_, init) => Some(init.rng()),
            _ => None,
        };
        let mut make =
            |name: String, weight: Tensor, bias: Option<Tensor>| -> candle_core::Result<Linear> {
                let lora = match (trainable, lora_rng.as_mut()) {
                    (Trainable::Lora(lc, _), Some(rng)) if lc.targets(&name) => {
                        let (out_dim, in_dim) = weight.dims2()?;
                        let (a, b) = super::lora::init_pair(lc, in_dim, out_dim, rng)?;
                        let a = Var::from_tensor(&a)?;
                        let b = Var::from_tensor(&b)?;
                        let pair = (a.as_tensor().clone(), b.as_tensor().clone(), lc.scale());
                        params.insert(format!("{name}.lora_A.weight"), a);
                        params.insert(format!("{name}.lora_B.weight"), b);
                        Some(pair)
                    }
                    _ => None,
                };
                Ok(Linear { weight, bias, lora })
            };
        let mut layers = Vec::with_capacity(raw_layers.len());
        for (projs, ln1, ln2) in raw_layers {
            let mut it = projs.into_iter();
            let mut next = || {
                let (n, t, b) = it.next().expect("seven projections");
                make(n, t, b)
            };
            layers.push(Layer {
                q: next()?,
                k: next()?,
                v: next()?,
                o: next()?,
                gate: next()?,
                up: next()?,
                down: next()?,
                ln1,
                ln2,
            });
        }
        let lm_head = make("lm_head".into(), lm_head_w, None)?;
        let (cos, sin) = rope_tables(cfg, &Device::Cpu)?;
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
            params,
        })
    }

    /// Hidden states after the final norm, `(batch, seq, hidden)`, for token ids `(batch, seq)`.
    /// Attention is causal, so right padding does not change the real positions' states.
    pub fn hidden(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let rep = nh / nkv;
        let eps = cfg.rms_norm_eps as f32;
        let mut x =
            self.embed
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, t, cfg.hidden_size))?;
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        for layer in &self.layers {
            let h = rms_norm(&x, &layer.ln1, eps)?;
            // Query heads sharing a key/value head are stacked along the rows,
            // `(b, kv_heads, rep * t, hd)`: grouped-query attention without `repeat_kv` copies.
            let q = rope_heads(&layer.q.forward(&h)?, &self.cos, &self.sin, nh)?.reshape((
                b,
                nkv,
                rep * t,
                hd,
            ))?;
            let k = rope_heads(&layer.k.forward(&h)?, &self.cos, &self.sin, nkv)?;
            let v = layer
                .v
                .forward(&h)?
                .reshape((b, t, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let att = causal_softmax(&q.matmul(&k.t()?)?, t, scale)?;
            let y = att
                .matmul(&v)?
                .reshape((b, nh, t, hd))?
                .transpose(1, 2)?
                .reshape((b, t, cfg.hidden_size))?;
            x = (x + layer.o.forward(&y)?)?;
            let h = rms_norm(&x, &layer.ln2, eps)?;
            let m = swiglu(&layer.gate.forward(&h)?, &layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&m)?)?;
        }
        rms_norm(&x, &self.norm, eps)
    }

    /// Project hidden states to vocabulary logits.
    pub fn logits_from_hidden(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        self.lm_head.forward(h)
    }

    /// Log-probabilities of `targets[i]` given hidden states `h` `(n, hidden)` (rows of
    /// [`Llama::hidden`]): the lm-head, log-softmax and gather fused, so no `(n, vocab)`
    /// logits tensor enters the graph.
    pub fn logprobs_from_hidden(&self, h: &Tensor, targets: &[u32]) -> candle_core::Result<Tensor> {
        if self.lm_head.lora.is_some() {
            let logp = candle_nn::ops::log_softmax(&self.lm_head.forward(h)?, D::Minus1)?;
            let t = Tensor::new(targets, h.device())?.unsqueeze(1)?;
            return logp.gather(&t, 1)?.squeeze(1);
        }
        lm_head_logprobs(h, &self.lm_head.weight, targets)
    }

    /// Logits at every position, `(batch, seq, vocab)`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.logits_from_hidden(&self.hidden(ids)?)
    }

    /// Current weights with LoRA pairs merged in (`W + scale * B A`), HF names: what a full
    /// checkpoint of this model stores.
    pub fn merged_weights(&self) -> candle_core::Result<Weights> {
        let mut out = BTreeMap::new();
        let mut put_lin = |name: String, lin: &Linear| -> candle_core::Result<()> {
            let w = match &lin.lora {
                None => lin.weight.detach(),
                Some((a, b, s)) => (lin.weight.detach() + (b.matmul(a)? * *s)?)?.detach(),
            };
            out.insert(format!("{name}.weight"), w);
            if let Some(b) = &lin.bias {
                out.insert(format!("{name}.bias"), b.detach());
            }
            Ok(())
        };
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            put_lin(format!("{p}.self_attn.q_proj"), &layer.q)?;
            put_lin(format!("{p}.self_attn.k_proj"), &layer.k)?;
            put_lin(format!("{p}.self_attn.v_proj"), &layer.v)?;
            put_lin(format!("{p}.self_attn.o_proj"), &layer.o)?;
            put_lin(format!("{p}.mlp.gate_proj"), &layer.gate)?;
            put_lin(format!("{p}.mlp.up_proj"), &layer.up)?;
            put_lin(format!("{p}.mlp.down_proj"), &layer.down)?;
        }
        let tied = self.cfg.tie_word_embeddings;
        if !tied || self.lm_head.lora.is_some() {
            put_lin("lm_head".into(), &self.lm_head)?;
        }
        let mut w = Weights(out);
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            w.0.insert(format!("{p}.input_layernorm.weight"), layer.ln1.detach());
            w.0.insert(
                format!("{p}.post_attention_layernorm.weight"),
                layer.ln2.detach(),
            );
        }
        w.0.insert("model.embed_tokens.weight".into(), self.embed.detach());
        w.0.insert("model.norm.weight".into(), self.norm.detach());
        Ok(w)
    }

    /// The trained LoRA matrices only (empty unless built with [`Trainable::Lora`]).
    pub fn lora_weights(&self) -> Weights {
        Weights(
            self.params
                .iter()
                .filter(|(k, _)| k.contains(".lora_"))
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect(),
        )
    }

    /// Set LoRA matrices from saved values (names as in [`Llama::lora_weights`]).
    pub fn load_lora(&self, w: &Weights) -> candle_core::Result<()> {
        for (name, t) in &w.0 {
            let var = self.params.get(name).ok_or_else(|| {
                candle_core::Error::Msg(format!("adapter tensor {name} has no LoRA slot"))
            })?;
            var.set(t)?;
        }
        Ok(())
    }
}

/// Hugging Face's rope tables (`(positions, head_dim/2)` cos and sin) from the config's inverse
/// frequencies (`llama3` scaling included), built in f32 as transformers builds them.
pub(crate) fn rope_tables(
    cfg: &ModelConfig,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv = cfg.inv_freq();
    let half = inv.len();
    let n = cfg.positions();
    let inv = Tensor::new(inv, dev)?;
    let idx = Tensor::arange(0, n as u32, dev)?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?
        .matmul(&inv.reshape((1, half))?)?;
    Ok((idx.cos()?, idx.sin()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Largest absolute element-wise difference of two tensors of one shape (the engine's
    /// tests compare weights, logits and gradients with it).
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// A tiny random llama (2 layers, GQA 4/2 heads, vocab 64), weights from a seeded RNG.
    pub(crate) fn tiny(seed: u64) -> (ModelConfig, Weights) {
        let cfg: ModelConfig = serde_json::from_str(
            r#"{"hidden_size":32,"intermediate_size":48,"vocab_size":64,"num_hidden_layers":2,
                "num_attention_heads":4,"num_key_value_heads":2,"rms_norm_eps":1e-5,
                "rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":true}"#,
        )
        .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut w = BTreeMap::new();
        let mut rand_t = |shape: &[usize], scale: f32, offset: f32| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n)
                .map(|_| offset + scale * (rng.gen::<f32>() * 2.0 - 1.0))
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        };
        w.insert(
            "model.embed_tokens.weight".to_string(),
            rand_t(&[64, 32], 0.5, 0.0),
        );
        w.insert("model.norm.weight".to_string(), rand_t(&[32], 0.1, 1.0));
        for l in 0..2 {
            let p = format!("model.layers.{l}");
            for (n, s) in [
                ("self_attn.q_proj", [32, 32]),
                ("self_attn.k_proj", [16, 32]),
                ("self_attn.v_proj", [16, 32]),
                ("self_attn.o_proj", [32, 32]),
                ("mlp.gate_proj", [48, 32]),
                ("mlp.up_proj", [48, 32]),
                ("mlp.down_proj", [32, 48]),
            ] {
                w.insert(format!("{p}.{n}.weight"), rand_t(&s, 0.3, 0.0));
            }
            w.insert(
                format!("{p}.input_layernorm.weight"),
                rand_t(&[32], 0.1, 1.0),
            );
            w.insert(
                format!("{p}.post_attention_layernorm.weight"),
                rand_t(&[32], 0.1, 1.0),
            );
        }
        (cfg, Weights(w))
    }

    fn ids(v: &[u32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
    }

    #[test]
    fn matches_candle_transformers_llama() {
        let (cfg, w) = tiny(1);
        let model = Llama::new(&cfg, &w, &Trainable::None).unwrap();
        let input = [3u32, 17, 9, 42, 5, 8, 60, 1];
        let ours = model.forward(&ids(&input)).unwrap().squeeze(0).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(
            super::super::weights::to_hashmap(&w),
            DType::F32,
            &Device::Cpu,
        );
        let ccfg = cfg.to_candle();
        let theirs = candle_transformers::models::llama::Llama::load(vb, &ccfg).unwrap();
        // candle's Llama returns the last position only: compare every prefix's last logits.
        for t in 1..=input.len() {
            let mut cache = candle_transformers::models::llama::Cache::new(
                false,
                DType::F32,
                &ccfg,
                &Device::Cpu,
            )
            .unwrap();
            let want: Vec<f32> = theirs
                .forward(&ids(&input[..t]), 0, &mut cache)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap();
            let got: Vec<f32> = ours.get(t - 1).unwrap().to_vec1().unwrap();
            let diff = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-4, "position {t}: max |diff| {diff}");
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let (cfg, w) = tiny(2);
        let model = Llama::new(&cfg, &w, &Trainable::All).unwrap();
        assert_eq!(model.params.len(), w.0.len());
        let logits = model.forward(&ids(&[1, 2, 3, 4, 5])).unwrap();
        let loss = candle_nn::loss::cross_entropy(
            &logits.squeeze(0).unwrap().narrow(0, 0, 4).unwrap(),
            &Tensor::new(&[2u32, 3, 4, 5], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in &model.params {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0, "zero gradient for {name}");
        }
    }
}
