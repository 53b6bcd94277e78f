//! GGUF files: metadata (the model configuration, checked against the tensors; chat template) and the tokenizer rebuilt from
//! `tokenizer.ggml.*` (there is no tokenizer.json beside a GGUF).
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::Tokenizer;

use super::chat::{ChatError, ChatTemplate};
use super::config::{Architecture, ConfigError, ModelConfig};
use super::tokenizer::{build_byte_level_bpe, BpeSpec};
use super::weights::{gguf_to_hf_name, hf_to_gguf_name};

/// Errors reading a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("opening {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable GGUF file: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: metadata key `{key}`: {message}")]
    BadKey {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Config { path: PathBuf, source: ConfigError },
    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },
    #[error("{path}: building the tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
}

/// An opened GGUF: its parsed header and the file to read tensors from.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub file: File,
}

impl GgufFile {
    /// Open and parse the header of a GGUF file.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let mut file = File::open(path).map_err(|source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let content = Content::read(&mut file).map_err(|e| GgufError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            file,
        })
    }

    fn get(&self, key: &str) -> Result<&Value, GgufError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| GgufError::MissingKey {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    fn bad(&self, key: &str, e: impl std::fmt::Display) -> GgufError {
        GgufError::BadKey {
            path: self.path.clone(),
            key: key.to_string(),
            message: e.to_string(),
        }
    }

    /// A string metadata value, if present.
    pub fn get_string(&self, key: &str) -> Option<String> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    }

    /// The model configuration the metadata describes, checked against the tensors the file
    /// holds: every tensor must be one that configuration has, with its shape (a file whose
    /// metadata contradicts its tensors is refused before any tensor is read).
    pub fn config(&self) -> Result<ModelConfig, GgufError> {
        let path = &self.path;
        let mut cfg =
            ModelConfig::from_gguf_metadata(&self.content.metadata).map_err(|source| {
                GgufError::Config {
                    path: path.clone(),
                    source,
                }
            })?;
        let infos = &self.content.tensor_infos;
        cfg.tie_word_embeddings = !infos.contains_key("output.weight");
        let want: HashMap<String, Vec<usize>> = cfg.tensor_shapes().into_iter().collect();
        let tensor_err = |name: &str, message: String| GgufError::Tensor {
            path: path.clone(),
            name: name.to_owned(),
            message,
        };
        for (name, info) in infos {
            if name == "rope_freqs.weight" {
                return Err(tensor_err(
                    name,
                    "rope frequency factors (Llama 3.1 rope scaling) are not supported in a \
                     GGUF; load the Hugging Face folder instead"
                        .into(),
                ));
            }
            let hf = gguf_to_hf_name(name)
                .filter(|hf| want.contains_key(hf))
                .ok_or_else(|| {
                    tensor_err(
                        name,
                        format!(
                            "not a tensor of the {} model the metadata describes",
                            self.get_string("general.architecture").unwrap_or_default()
                        ),
                    )
                })?;
            let dims = info.shape.dims();
            if dims != want[&hf].as_slice() {
                return Err(tensor_err(
                    name,
                    format!("shape {dims:?}, the metadata implies {:?}", want[&hf]),
                ));
            }
        }
        for hf in want.keys() {
            let g = hf_to_gguf_name(hf).unwrap_or_default();
            if !infos.contains_key(&g) {
                return Err(tensor_err(&g, "missing".into()));
            }
        }
        Ok(cfg)
    }

    /// The chat template the file carries, rendered with its bos/eos tokens (plain ChatML
    /// when it carries none).
    pub fn chat(&self) -> Result<ChatTemplate, ChatError> {
        match self.chat_template() {
            Some(t) => {
                let bos = self
                    .token_text("tokenizer.ggml.bos_token_id")
                    .unwrap_or_default();
                let eos = self
                    .token_text("tokenizer.ggml.eos_token_id")
                    .unwrap_or_default();
                ChatTemplate::new(&t, &bos, &eos)
            }
            None => Ok(ChatTemplate::chatml()),
        }
    }

    /// The chat template the file carries, if any.
    pub fn chat_template(&self) -> Option<String> {
        self.get_string("tokenizer.chat_template")
    }

    /// The text of the special token whose id `key` names (e.g. `tokenizer.ggml.bos_token_id`).
    pub fn token_text(&self, key: &str) -> Option<String> {
        let id = self.token_id(key)? as usize;
        let tokens = self
            .content
            .metadata
            .get("tokenizer.ggml.tokens")?
            .to_vec()
            .ok()?;
        tokens.get(id)?.to_string().ok().cloned()
    }

    /// Special token ids named in the metadata (`tokenizer.ggml.eos_token_id` and so on).
    pub fn token_id(&self, key: &str) -> Option<u32> {
        self.content.metadata.get(key).and_then(|v| v.to_u32().ok())
    }

    /// The byte-level BPE tokenizer described by `tokenizer.ggml.*`.
    pub fn tokenizer(&self) -> Result<Tokenizer, GgufError> {
        let model = self.get_string("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            return Err(self.bad(
                "tokenizer.ggml.model",
                format!("`{model}` is not supported (byte-level BPE `gpt2` only)"),
            ));
        }
        let strings = |key: &str| -> Result<Vec<String>, GgufError> {
            self.get(key)?
                .to_vec()
                .map_err(|e| self.bad(key, e))?
                .iter()
                .map(|v| v.to_string().cloned().map_err(|e| self.bad(key, e)))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, m)| match m.split_once(' ') {
                Some((a, b)) => Ok((a.to_string(), b.to_string())),
                None => Err(self.bad(
                    "tokenizer.ggml.merges",
                    format!("entry {i} `{m}` has no space"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Token types 3 (control) and 4 (user-defined) are the added/special tokens.
        let special_ids = match self.content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| self.bad("tokenizer.ggml.token_type", e))?
                .iter()
                .enumerate()
                .filter(|(_, t)| {
                    matches!(
                        t.to_i32().or_else(|_| t.to_u32().map(|x| x as i32)),
                        Ok(3 | 4)
                    )
                })
                .map(|(i, _)| i as u32)
                .collect(),
            None => ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]
                .iter()
                .filter_map(|k| self.token_id(k))
                .collect(),
        };
        build_byte_level_bpe(&BpeSpec {
            tokens,
            merges,
            special_ids,
        })
        .map_err(|e| GgufError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

/// The GGUF side of [`ModelConfig`]: llama.cpp's `{arch}.*` metadata keys.
impl ModelConfig {
    /// Derive the config from a GGUF's metadata (llama.cpp's `{arch}.*` names). Whether the
    /// embeddings are tied is set by the caller, who sees the tensors.
    pub fn from_gguf_metadata(md: &HashMap<String, Value>) -> Result<Self, ConfigError> {
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("?");
        let arch = match arch_name {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => return Err(ConfigError::Architecture(other.to_owned())),
        };
        let a = arch_name;
        let num = |k: &str| -> Result<usize, ConfigError> {
            md.get(k)
                .and_then(|v| {
                    v.to_u32()
                        .map(u64::from)
                        .or_else(|_| v.to_u64())
                        .or_else(|_| v.to_i32().map(|x| x.max(0) as u64))
                        .ok()
                })
                .map(|x| x as usize)
                .ok_or_else(|| ConfigError::GgufField {
                    field: k.to_owned(),
                })
        };
        let float = |k: &str| md.get(k).and_then(|v| v.to_f32().ok());
        let hidden_size = num(&format!("{a}.embedding_length"))?;
        let vocab_size = match num(&format!("{a}.vocab_size")) {
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
        let (class, model_type) = arch.hf_names();
        extra.insert("model_type".into(), model_type.into());
        extra.insert("architectures".into(), serde_json::json!([class]));
        for (gguf_key, hf_key) in [
            ("tokenizer.ggml.bos_token_id", "bos_token_id"),
            ("tokenizer.ggml.eos_token_id", "eos_token_id"),
            ("tokenizer.ggml.padding_token_id", "pad_token_id"),
        ] {
            if let Some(id) = md.get(gguf_key).and_then(|v| v.to_u32().ok()) {
                extra.insert(hf_key.into(), id.into());
            }
        }
        let eps_key = format!("{a}.attention.layer_norm_rms_epsilon");
        let cfg = Self {
            hidden_size,
            intermediate_size: num(&format!("{a}.feed_forward_length"))?,
            vocab_size,
            num_hidden_layers: num(&format!("{a}.block_count"))?,
            num_attention_heads: num(&format!("{a}.attention.head_count"))?,
            num_key_value_heads: num(&format!("{a}.attention.head_count_kv")).ok(),
            rms_norm_eps: float(&eps_key).ok_or(ConfigError::GgufField { field: eps_key })? as f64,
            rope_theta: float(&format!("{a}.rope.freq_base")).unwrap_or(10_000.0) as f64,
            max_position_embeddings: num(&format!("{a}.context_length")).unwrap_or(2048),
            tie_word_embeddings: true,
            extra,
        };
        cfg.validate()?;
        for k in [
            "rope.dimension_count",
            "attention.key_length",
            "attention.value_length",
        ] {
            if let Ok(dim) = num(&format!("{a}.{k}")) {
                if dim != cfg.head_dim() {
                    return Err(ConfigError::Invalid(format!(
                        "GGUF `{a}.{k}` {dim} differs from the head dimension {} (partial \
                         rotary embeddings and wide heads are not supported)",
                        cfg.head_dim()
                    )));
                }
            }
        }
        let scaling = format!("{a}.rope.scaling.type");
        match md.get(&scaling).and_then(|v| v.to_string().ok()) {
            None => {}
            Some(t) if t == "none" => {}
            Some(t) => {
                return Err(ConfigError::Invalid(format!(
                    "GGUF `{scaling}` `{t}` is not supported"
                )))
            }
        }
        Ok(cfg)
    }

    /// The GGUF metadata for this config (the reverse of `from_gguf_metadata`).
    pub fn to_gguf_metadata(&self) -> Result<Vec<(String, Value)>, ConfigError> {
        let arch = self.architecture()?;
        if self.rope_scaling()?.is_some() {
            return Err(ConfigError::Invalid(
                "writing a GGUF with llama3 rope scaling is not supported".into(),
            ));
        }
        let a = arch.gguf_name();
        let u = |x: usize| Value::U32(x as u32);
        let k = |s: &str| format!("{a}.{s}");
        Ok(vec![
            ("general.architecture".into(), Value::String(a.into())),
            (k("block_count"), u(self.num_hidden_layers)),
            (k("context_length"), u(self.positions())),
            (k("embedding_length"), u(self.hidden_size)),
            (k("feed_forward_length"), u(self.intermediate_size)),
            (k("attention.head_count"), u(self.num_attention_heads)),
            (k("attention.head_count_kv"), u(self.kv_heads())),
            (k("rope.freq_base"), Value::F32(self.theta() as f32)),
            (
                k("attention.layer_norm_rms_epsilon"),
                Value::F32(self.rms_norm_eps as f32),
            ),
            (k("vocab_size"), u(self.vocab_size)),
            (k("rope.dimension_count"), u(self.head_dim())),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_gguf_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.gguf");
        std::fs::write(&p, b"not a gguf file at all").unwrap();
        let err = GgufFile::open(&p).err().unwrap().to_string();
        assert!(err.contains("x.gguf"), "{err}");
        assert!(err.contains("not a readable GGUF"), "{err}");
    }
}
