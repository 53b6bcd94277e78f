//! The llama architecture's hyper-parameters: Hugging Face `config.json` fields, read from a
//! folder or derived from a GGUF's `llama.*` metadata, and written back into checkpoints.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use serde::{Deserialize, Serialize};

/// Errors reading or checking a model configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid llama config: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("GGUF metadata: missing or invalid field `{field}`")]
    GgufField { field: String },
    #[error("GGUF architecture `{0}` is not llama; srlm trains llama-family models only")]
    Architecture(String),
    #[error("invalid llama config: {0}")]
    Invalid(String),
}

/// Hugging Face `LlamaConfig` fields srlm uses; every other field of the file is kept in
/// `extra` so that writing a checkpoint's `config.json` loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_max_positions() -> usize {
    2048
}

impl LlamaConfig {
    /// Key/value heads (grouped-query attention); equal to the query heads when absent.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Every tensor a llama with this config has (Hugging Face names) and its shape.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, ff, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (qw, kw) = (
            self.num_attention_heads * self.head_dim(),
            self.kv_heads() * self.head_dim(),
        );
        let mut out: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![v, d]),
            ("model.norm.weight".into(), vec![d]),
        ];
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![v, d]));
        }
        for l in 0..self.num_hidden_layers {
            for (n, s) in [
                ("self_attn.q_proj", vec![qw, d]),
                ("self_attn.k_proj", vec![kw, d]),
                ("self_attn.v_proj", vec![kw, d]),
                ("self_attn.o_proj", vec![d, qw]),
                ("mlp.gate_proj", vec![ff, d]),
                ("mlp.up_proj", vec![ff, d]),
                ("mlp.down_proj", vec![d, ff]),
                ("input_layernorm", vec![d]),
                ("post_attention_layernorm", vec![d]),
            ] {
                out.push((format!("model.layers.{l}.{n}.weight"), s));
            }
        }
        out
    }

    /// Reject shapes the forward pass cannot run (and rope scalings it does not implement).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.kv_heads() == 0 || self.num_attention_heads % self.kv_heads() != 0 {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim() % 2 != 0 {
            return bad(format!("head dimension {} is odd", self.head_dim()));
        }
        match self.extra.get("rope_scaling") {
            None | Some(serde_json::Value::Null) => Ok(()),
            Some(v) => bad(format!("rope_scaling {v} is not supported")),
        }
    }

    /// Read a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let cfg: Self = serde_json::from_slice(&bytes).map_err(|source| ConfigError::Json {
            path: path.to_owned(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Canonical `config.json` bytes (pretty, keys in a fixed order, final newline), so a
    /// checkpoint written twice hashes the same.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).expect("config serialises");
        sort_keys(&mut v);
        let mut out = serde_json::to_vec_pretty(&v).expect("config serialises");
        out.push(b'\n');
        out
    }

    /// Derive the config from a GGUF's `llama.*` metadata (llama.cpp's names).
    pub fn from_gguf_metadata(md: &HashMap<String, Value>) -> Result<Self, ConfigError> {
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok());
        match arch.map(String::as_str) {
            Some("llama") => {}
            other => return Err(ConfigError::Architecture(other.unwrap_or("?").to_owned())),
        }
        let num = |k: &str| -> Result<usize, ConfigError> {
            md.get(k)
                .and_then(|v| {
                    v.to_u32()
                        .ok()
                        .or_else(|| v.to_u64().ok().map(|x| x as u32))
                })
                .map(|x| x as usize)
                .ok_or_else(|| ConfigError::GgufField {
                    field: k.to_owned(),
                })
        };
        let float = |k: &str| md.get(k).and_then(|v| v.to_f32().ok());
        let hidden_size = num("llama.embedding_length")?;
        let vocab_size = match num("llama.vocab_size") {
            Ok(v) => v,
            Err(e) => match md
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok())
            {
                Some(toks) => toks.len(),
                None => return Err(e),
            },
        };
        let mut extra = serde_json::Map::new();
        extra.insert("model_type".into(), "llama".into());
        extra.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
        for (gguf_key, hf_key) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = md.get(gguf_key).and_then(|v| v.to_u32().ok()) {
                extra.insert(hf_key.into(), id.into());
            }
        }
        let cfg = Self {
            hidden_size,
            intermediate_size: num("llama.feed_forward_length")?,
            vocab_size,
            num_hidden_layers: num("llama.block_count")?,
            num_attention_heads: num("llama.attention.head_count")?,
            num_key_value_heads: num("llama.attention.head_count_kv").ok(),
            rms_norm_eps: float("llama.attention.layer_norm_rms_epsilon").ok_or_else(|| {
                ConfigError::GgufField {
                    field: "llama.attention.layer_norm_rms_epsilon".into(),
                }
            })? as f64,
            rope_theta: float("llama.rope.freq_base").unwrap_or(10_000.0) as f64,
            max_position_embeddings: num("llama.context_length").unwrap_or(2048),
            // Set by the weight loader once it knows whether `output.weight` exists.
            tie_word_embeddings: true,
            extra,
        };
        if let Ok(rope_dim) = num("llama.rope.dimension_count") {
            if rope_dim != cfg.head_dim() {
                return Err(ConfigError::Invalid(format!(
                    "partial rotary embedding ({rope_dim} of {}) is not supported",
                    cfg.head_dim()
                )));
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The GGUF `llama.*` metadata for this config (the reverse of `from_gguf_metadata`).
    pub fn to_gguf_metadata(&self) -> Vec<(String, Value)> {
        let u = |x: usize| Value::U32(x as u32);
        vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("llama.block_count".into(), u(self.num_hidden_layers)),
            (
                "llama.context_length".into(),
                u(self.max_position_embeddings),
            ),
            ("llama.embedding_length".into(), u(self.hidden_size)),
            (
                "llama.feed_forward_length".into(),
                u(self.intermediate_size),
            ),
            (
                "llama.attention.head_count".into(),
                u(self.num_attention_heads),
            ),
            ("llama.attention.head_count_kv".into(), u(self.kv_heads())),
            (
                "llama.rope.freq_base".into(),
                Value::F32(self.rope_theta as f32),
            ),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                Value::F32(self.rms_norm_eps as f32),
            ),
            ("llama.vocab_size".into(), u(self.vocab_size)),
            ("llama.rope.dimension_count".into(), u(self.head_dim())),
        ]
    }

    /// candle-transformers' inference config for the same model (used to cross-check logits).
    pub fn to_candle(&self) -> candle_transformers::models::llama::Config {
        candle_transformers::models::llama::Config {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            vocab_size: self.vocab_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.kv_heads(),
            use_flash_attn: false,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta as f32,
            bos_token_id: None,
            eos_token_id: None,
            rope_scaling: None,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }
}

/// Sort object keys recursively (serde_json keeps insertion order with `preserve_order`).
pub(crate) fn sort_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = std::mem::take(map).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut val) in entries {
                sort_keys(&mut val);
                map.insert(k, val);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm_like() -> LlamaConfig {
        serde_json::from_str(
            r#"{"hidden_size":576,"intermediate_size":1536,"vocab_size":49152,
                "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
                "rms_norm_eps":1e-5,"rope_theta":100000.0,"max_position_embeddings":8192,
                "tie_word_embeddings":true,"model_type":"llama","torch_dtype":"bfloat16"}"#,
        )
        .unwrap()
    }

    #[test]
    fn json_keeps_unknown_fields_and_is_canonical() {
        let cfg = smollm_like();
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.kv_heads(), 3);
        assert_eq!(cfg.extra["torch_dtype"], "bfloat16");
        let bytes = cfg.to_json_bytes();
        let back: LlamaConfig = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.to_json_bytes(), bytes);
    }

    #[test]
    fn gguf_metadata_round_trip() {
        let mut cfg = smollm_like();
        cfg.extra.clear();
        let md: HashMap<String, Value> = cfg.to_gguf_metadata().into_iter().collect();
        let back = LlamaConfig::from_gguf_metadata(&md).unwrap();
        assert_eq!(back.hidden_size, 576);
        assert_eq!(back.num_key_value_heads, Some(3));
        assert_eq!(back.rope_theta, 100000.0);
        assert_eq!(back.max_position_embeddings, 8192);
        assert!((back.rms_norm_eps - 1e-5).abs() < 1e-10);
    }

    #[test]
    fn rejects_bad_shapes_and_architectures() {
        let mut cfg = smollm_like();
        cfg.num_key_value_heads = Some(4);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_key_value_heads"));
        let mut md: HashMap<String, Value> = smollm_like().to_gguf_metadata().into_iter().collect();
        md.insert("general.architecture".into(), Value::String("gpt2".into()));
        assert!(matches!(
            LlamaConfig::from_gguf_metadata(&md),
            Err(ConfigError::Architecture(a)) if a == "gpt2"
        ));
    }
}
