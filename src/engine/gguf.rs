//! GGUF files: metadata (llama hyper-parameters, chat template) and the tokenizer rebuilt from
//! `tokenizer.ggml.*` (there is no tokenizer.json beside a GGUF).
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::Tokenizer;

use super::tokenizer::{build_byte_level_bpe, BpeSpec};

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
    #[error("{path}: architecture `{arch}` is not supported (llama only)")]
    Architecture { path: PathBuf, arch: String },
    #[error("{path}: building the tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
}

/// An opened GGUF: its parsed header and the file to read tensors from.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub file: File,
}

/// Llama hyper-parameters from `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufLlama {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub context_length: usize,
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

    fn get_usize(&self, key: &str) -> Result<usize, GgufError> {
        let v = self.get(key)?;
        // Writers differ in the integer width they use.
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .or_else(|_| v.to_i32().map(|x| x as usize))
            .map_err(|e| self.bad(key, e))
    }

    fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.get(key)?.to_f32().map_err(|e| self.bad(key, e))
    }

    /// A string metadata value, if present.
    pub fn get_string(&self, key: &str) -> Option<String> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .cloned()
    }

    /// The llama hyper-parameters; refuses other architectures.
    pub fn llama(&self) -> Result<GgufLlama, GgufError> {
        let arch = self
            .get_string("general.architecture")
            .unwrap_or_default();
        if arch != "llama" {
            return Err(GgufError::Architecture {
                path: self.path.clone(),
                arch,
            });
        }
        let hidden_size = self.get_usize("llama.embedding_length")?;
        let num_heads = self.get_usize("llama.attention.head_count")?;
        let num_kv_heads = self
            .get_usize("llama.attention.head_count_kv")
            .unwrap_or(num_heads);
        let vocab_size = match self.get_usize("llama.vocab_size") {
            Ok(v) => v,
            Err(_) => self
                .get("tokenizer.ggml.tokens")?
                .to_vec()
                .map_err(|e| self.bad("tokenizer.ggml.tokens", e))?
                .len(),
        };
        Ok(GgufLlama {
            vocab_size,
            hidden_size,
            intermediate_size: self.get_usize("llama.feed_forward_length")?,
            num_layers: self.get_usize("llama.block_count")?,
            num_heads,
            num_kv_heads,
            head_dim: self
                .get_usize("llama.rope.dimension_count")
                .unwrap_or(hidden_size / num_heads),
            rms_norm_eps: self.get_f32("llama.attention.layer_norm_rms_epsilon")? as f64,
            rope_theta: self.get_f32("llama.rope.freq_base").unwrap_or(10000.0),
            context_length: self.get_usize("llama.context_length").unwrap_or(2048),
        })
    }

    /// The chat template the file carries, if any.
    pub fn chat_template(&self) -> Option<String> {
        self.get_string("tokenizer.chat_template")
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
                None => Err(self.bad("tokenizer.ggml.merges", format!("entry {i} `{m}` has no space"))),
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
                    matches!(t.to_i32().or_else(|_| t.to_u32().map(|x| x as i32)), Ok(3 | 4))
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
