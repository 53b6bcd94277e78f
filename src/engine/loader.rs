//! Building the inference [`Model`] from a GGUF (tensors as stored, quantized or not) or a
//! folder (a Hugging Face folder or srlm checkpoint, read by the one loader training uses,
//! [`super::checkpoint::load`]), with its matrices held as [`WeightMode`] says.
use std::collections::BTreeSet;
use std::path::Path;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use tokenizers::Tokenizer;

use super::chat::ChatTemplate;
use super::config::ModelConfig;
use super::gguf::GgufFile;
use super::kernels::QMatrix;
use super::model::{Layer, Linear, Model, ModelError, ModelFormat, WeightMode};

type Result<T> = std::result::Result<T, ModelError>;

fn dtype_name(d: GgmlDType) -> String {
    format!("{d:?}").to_ascii_lowercase()
}

/// Turn a stored matrix into a [`Linear`] held as `mode` says; returns the dtype used.
fn to_linear(q: QTensor, mode: WeightMode) -> candle_core::Result<(Linear, GgmlDType)> {
    let stored = q.dtype();
    let k = *q.shape().dims().last().unwrap_or(&0);
    let target = match mode.target(stored) {
        t if t != GgmlDType::F32 && k % t.block_size() != 0 => GgmlDType::F32,
        t => t,
    };
    let q = if target == stored {
        q
    } else {
        let f = q.dequantize(&Device::Cpu)?;
        if target == GgmlDType::F32 {
            return Ok((Linear::Candle(QMatMul::Tensor(f)), target));
        }
        QTensor::quantize(&f, target)?
    };
    let linear = match QMatrix::from_qtensor(&q)? {
        Some(m) => Linear::Quant(m),
        None => Linear::Candle(QMatMul::from_qtensor(q)?),
    };
    Ok((linear, target))
}

fn describe(stored: &BTreeSet<String>, held: &BTreeSet<String>) -> String {
    let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("+");
    if stored == held {
        join(held)
    } else {
        format!("{} (from {})", join(held), join(stored))
    }
}

/// The rotary angles' cosines and sines, `positions × head_dim/2` (the config's inverse
/// frequencies, so `llama3` scaling is in them).
fn rope_tables(cfg: &ModelConfig) -> (Vec<f32>, Vec<f32>) {
    let inv = cfg.inv_freq();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..cfg.positions() {
        for f in &inv {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

/// A tensor's values as one f32 vector.
fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

/// Token ids that end generation: the eos ids, the template's end-of-turn marker, and
/// `<|endoftext|>` where the vocabulary has it.
fn stop_ids(tok: &Tokenizer, chat: &ChatTemplate, mut ids: Vec<u32>) -> Vec<u32> {
    for t in [chat.end_marker(), chat.eos_token(), "<|endoftext|>"] {
        if let Some(id) = tok.token_to_id(t) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn config_error(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

pub(super) fn load_gguf(path: &Path, mode: WeightMode) -> Result<Model> {
    let mut g = GgufFile::open(path)?;
    let config = g.config()?;
    let interleaved = config
        .architecture()
        .map_err(|e| config_error(path, e))?
        .gguf_interleaved();
    let tokenizer = g.tokenizer()?;
    let chat = g.chat().map_err(|source| ModelError::Chat {
        path: path.to_path_buf(),
        source,
    })?;
    let device = Device::Cpu;
    let (mut stored, mut held) = (BTreeSet::new(), BTreeSet::new());
    let tensor = |g: &mut GgufFile, name: &str| -> Result<QTensor> {
        let GgufFile {
            content,
            file,
            path,
        } = g;
        content
            .tensor(file, name, &device)
            .map_err(|e| ModelError::Tensor {
                path: path.clone(),
                name: name.to_string(),
                message: e.to_string(),
            })
    };
    let mut matmul = |g: &mut GgufFile, name: &str| -> Result<Linear> {
        let q = tensor(g, name)?;
        stored.insert(dtype_name(q.dtype()));
        let (mm, d) = to_linear(q, mode)?;
        held.insert(dtype_name(d));
        Ok(mm)
    };
    let vector = |g: &mut GgufFile, name: &str| -> Result<Vec<f32>> {
        values(&tensor(g, name)?.dequantize(&device)?)
    };
    let bias = config.qkv_bias();
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("blk.{i}");
        let b = |g: &mut GgufFile, n: &str| -> Result<Option<Vec<f32>>> {
            bias.then(|| vector(g, &format!("{p}.{n}.bias")))
                .transpose()
        };
        let (bq, bk, bv) = (
            b(&mut g, "attn_q")?,
            b(&mut g, "attn_k")?,
            b(&mut g, "attn_v")?,
        );
        layers.push(Layer {
            attn_norm: vector(&mut g, &format!("{p}.attn_norm.weight"))?,
            wq: matmul(&mut g, &format!("{p}.attn_q.weight"))?,
            wk: matmul(&mut g, &format!("{p}.attn_k.weight"))?,
            wv: matmul(&mut g, &format!("{p}.attn_v.weight"))?,
            bq,
            bk,
            bv,
            wo: matmul(&mut g, &format!("{p}.attn_output.weight"))?,
            ffn_norm: vector(&mut g, &format!("{p}.ffn_norm.weight"))?,
            w_gate: matmul(&mut g, &format!("{p}.ffn_gate.weight"))?,
            w_up: matmul(&mut g, &format!("{p}.ffn_up.weight"))?,
            w_down: matmul(&mut g, &format!("{p}.ffn_down.weight"))?,
        });
    }
    let final_norm = vector(&mut g, "output_norm.weight")?;
    let lm_head = if config.tie_word_embeddings {
        matmul(&mut g, "token_embd.weight")?
    } else {
        matmul(&mut g, "output.weight")?
    };
    let embed = vector(&mut g, "token_embd.weight")?;
    let eos: Vec<u32> = g
        .token_id("tokenizer.ggml.eos_token_id")
        .into_iter()
        .collect();
    let stop_ids = stop_ids(&tokenizer, &chat, eos);
    let (cos, sin) = rope_tables(&config);
    Ok(Model {
        config,
        tokenizer,
        chat,
        stop_ids,
        format: ModelFormat::Gguf,
        weights: describe(&stored, &held),
        path: path.to_path_buf(),
        embed,
        layers,
        norm: final_norm,
        lm_head,
        cos,
        sin,
        rope_interleaved: interleaved,
        device,
    })
}

pub(super) fn load_folder(dir: &Path, mode: WeightMode) -> Result<Model> {
    let loaded = super::checkpoint::load(dir).map_err(|e| config_error(dir, e))?;
    let config = loaded.cfg;
    let mut tensors = loaded.weights.0;
    let mut take = |name: &str| -> Result<Tensor> {
        let t = tensors.remove(name).ok_or_else(|| ModelError::Tensor {
            path: dir.to_path_buf(),
            name: name.to_string(),
            message: "missing".into(),
        })?;
        Ok(t.to_dtype(DType::F32)?)
    };
    let (mut stored, mut held) = (BTreeSet::new(), BTreeSet::new());
    let mut matmul = |t: Tensor| -> Result<Linear> {
        stored.insert("f32".to_string());
        let (mm, d) = to_linear(QTensor::quantize(&t, GgmlDType::F32)?, mode)?;
        held.insert(dtype_name(d));
        Ok(mm)
    };
    let bias = config.qkv_bias();
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let mut b = |n: &str| -> Result<Option<Vec<f32>>> {
            bias.then(|| values(&take(&format!("{p}.self_attn.{n}.bias"))?))
                .transpose()
        };
        let (bq, bk, bv) = (b("q_proj")?, b("k_proj")?, b("v_proj")?);
        layers.push(Layer {
            attn_norm: values(&take(&format!("{p}.input_layernorm.weight"))?)?,
            wq: matmul(take(&format!("{p}.self_attn.q_proj.weight"))?)?,
            wk: matmul(take(&format!("{p}.self_attn.k_proj.weight"))?)?,
            wv: matmul(take(&format!("{p}.self_attn.v_proj.weight"))?)?,
            bq,
            bk,
            bv,
            wo: matmul(take(&format!("{p}.self_attn.o_proj.weight"))?)?,
            ffn_norm: values(&take(&format!("{p}.post_attention_layernorm.weight"))?)?,
            w_gate: matmul(take(&format!("{p}.mlp.gate_proj.weight"))?)?,
            w_up: matmul(take(&format!("{p}.mlp.up_proj.weight"))?)?,
            w_down: matmul(take(&format!("{p}.mlp.down_proj.weight"))?)?,
        });
    }
    let norm = values(&take("model.norm.weight")?)?;
    let embed_w = take("model.embed_tokens.weight")?;
    let lm_head = match config.tie_word_embeddings {
        true => matmul(embed_w.clone())?,
        false => matmul(take("lm_head.weight")?)?,
    };
    let embed = values(&embed_w)?;
    let eos: Vec<u32> = match config.extra.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => vec![],
    };
    let stop_ids = stop_ids(&loaded.tokenizer, &loaded.chat, eos);
    let (cos, sin) = rope_tables(&config);
    Ok(Model {
        config,
        tokenizer: loaded.tokenizer,
        chat: loaded.chat,
        stop_ids,
        format: ModelFormat::Folder,
        weights: describe(&stored, &held),
        path: dir.to_path_buf(),
        embed,
        layers,
        norm,
        lm_head,
        cos,
        sin,
        rope_interleaved: false,
        device: Device::Cpu,
    })
}
