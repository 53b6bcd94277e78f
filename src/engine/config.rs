//! The one model configuration: Hugging Face `config.json` fields of the Llama family srlm
//! runs exactly (Llama 1–3.x, Mistral, Qwen2 / Qwen2.5), read from a folder or derived from a
//! GGUF's metadata, checked once by [`ModelConfig::validate`], and written back into
//! checkpoints. Anything srlm cannot run exactly (another architecture, an unknown rope
//! scaling, an active sliding window, biases it does not implement) is refused by name.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors reading or checking a model configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: line {line} column {column}: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("GGUF metadata: missing or invalid field `{field}`")]
    GgufField { field: String },
    #[error("architecture `{0}` is not supported; srlm runs {SUPPORTED}")]
    Architecture(String),
    #[error("model config: {0}")]
    Invalid(String),
}

/// What srlm runs, for error messages.
pub const SUPPORTED: &str = "LlamaForCausalLM (llama), MistralForCausalLM (mistral) and \
    Qwen2ForCausalLM (qwen2); GGUF architectures llama and qwen2";

/// The architectures srlm runs: one forward pass, differing in q/k/v biases (Qwen2) and in
/// how a GGUF lays out q/k rows (llama.cpp interleaves them for `llama` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    fn from_names(class: Option<&str>, model_type: Option<&str>) -> Result<Self, ConfigError> {
        match (class, model_type) {
            (Some("LlamaForCausalLM"), _) | (None, Some("llama")) => Ok(Self::Llama),
            (Some("MistralForCausalLM"), _) | (None, Some("mistral")) => Ok(Self::Mistral),
            (Some("Qwen2ForCausalLM"), _) | (None, Some("qwen2")) => Ok(Self::Qwen2),
            // srlm's own early checkpoints name neither.
            (None, None) => Ok(Self::Llama),
            (Some(c), _) => Err(ConfigError::Architecture(c.to_owned())),
            (None, Some(t)) => Err(ConfigError::Architecture(t.to_owned())),
        }
    }

    /// Hugging Face class and `model_type`.
    pub fn hf_names(self) -> (&'static str, &'static str) {
        match self {
            Self::Llama => ("LlamaForCausalLM", "llama"),
            Self::Mistral => ("MistralForCausalLM", "mistral"),
            Self::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        }
    }

    /// `general.architecture` in a GGUF (llama.cpp converts Mistral as `llama`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama | Self::Mistral => "llama",
            Self::Qwen2 => "qwen2",
        }
    }

    /// Whether a GGUF of this architecture stores q/k rows interleaved for llama.cpp's rope
    /// (`llama`); Qwen2 GGUFs keep Hugging Face's halves (NeoX rope).
    pub fn gguf_interleaved(self) -> bool {
        self.gguf_name() == "llama"
    }
}

/// The projections that carry biases in Qwen2.
pub const QKV: [&str; 3] = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"];

/// The `llama3` rope scaling of Llama 3.1 and later.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// Hugging Face config fields srlm uses; every other field of the file is kept in `extra`
/// (and checked by [`ModelConfig::validate`] where it changes the computation), so writing
/// a checkpoint's `config.json` loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
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

impl ModelConfig {
    /// The architecture `architectures` / `model_type` name.
    pub fn architecture(&self) -> Result<Architecture, ConfigError> {
        let class = match self.extra.get("architectures") {
            Some(serde_json::Value::Array(a)) if a.len() > 1 => {
                return Err(ConfigError::Invalid(format!(
                    "`architectures` lists {} classes; srlm runs one",
                    a.len()
                )))
            }
            Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_str()),
            _ => None,
        };
        let model_type = self.extra.get("model_type").and_then(|v| v.as_str());
        Architecture::from_names(class, model_type)
    }

    /// Key/value heads (grouped-query attention); equal to the query heads when absent.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head ([`ModelConfig::validate`] checks the division).
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Whether q, k and v projections carry biases (Qwen2's do).
    pub fn qkv_bias(&self) -> bool {
        matches!(self.architecture(), Ok(Architecture::Qwen2))
    }

    /// Positions srlm runs: the context, or Mistral's sliding window where that is shorter
    /// (within the window, windowed attention is plain causal attention).
    pub fn positions(&self) -> usize {
        match self.sliding_window() {
            Some(w) => w.min(self.max_position_embeddings),
            None => self.max_position_embeddings,
        }
    }

    fn sliding_window(&self) -> Option<usize> {
        if self.architecture().ok()? != Architecture::Mistral {
            return None;
        }
        self.extra
            .get("sliding_window")
            .and_then(|v| v.as_u64())
            .map(|w| w as usize)
    }

    /// The rotary base: transformers 5 writes it inside `rope_parameters` (which then wins),
    /// older versions as `rope_theta`.
    pub fn theta(&self) -> f64 {
        self.extra
            .get("rope_parameters")
            .and_then(|p| p.get("rope_theta"))
            .and_then(|t| t.as_f64())
            .unwrap_or(self.rope_theta)
    }

    /// The rope scaling, from `rope_scaling` (transformers 4) or `rope_parameters` (5).
    fn rope_spec(&self) -> Option<&serde_json::Value> {
        ["rope_scaling", "rope_parameters"]
            .iter()
            .filter_map(|k| self.extra.get(*k))
            .find(|v| !v.is_null())
    }

    /// The `llama3` rope scaling, if any (validated: other kinds are refused).
    pub fn rope_scaling(&self) -> Result<Option<Llama3Scaling>, ConfigError> {
        let Some(v) = self.rope_spec() else {
            return Ok(None);
        };
        let kind = v
            .get("rope_type")
            .or_else(|| v.get("type"))
            .and_then(|k| k.as_str());
        match kind {
            Some("default") => Ok(None),
            Some("llama3") => {
                let num = |k: &str| {
                    v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
                        ConfigError::Invalid(format!("rope_scaling `llama3` needs a number `{k}`"))
                    })
                };
                let s = Llama3Scaling {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: num("original_max_position_embeddings")?,
                };
                if s.factor <= 0.0 || s.high_freq_factor <= s.low_freq_factor {
                    return Err(ConfigError::Invalid(format!(
                        "rope_scaling {v} is not a valid llama3 scaling"
                    )));
                }
                Ok(Some(s))
            }
            _ => Err(ConfigError::Invalid(format!(
                "rope_scaling {v} is not supported (srlm implements `llama3` only)"
            ))),
        }
    }

    /// The rotary inverse frequencies, `head_dim / 2` of them, as transformers computes them
    /// (f32; with `llama3` scaling, long wavelengths divided by the factor and the band
    /// between smoothed).
    pub fn inv_freq(&self) -> Vec<f32> {
        let hd = self.head_dim();
        let theta = self.theta() as f32;
        let inv: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|i| 1f32 / theta.powf(i as f32 / hd as f32))
            .collect();
        let Ok(Some(s)) = self.rope_scaling() else {
            return inv;
        };
        let old = s.original_max_position_embeddings as f32;
        let (lo, hi, factor) = (
            s.low_freq_factor as f32,
            s.high_freq_factor as f32,
            s.factor as f32,
        );
        let (low_wavelen, high_wavelen) = (old / lo, old / hi);
        inv.into_iter()
            .map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen > low_wavelen {
                    f / factor
                } else if wavelen < high_wavelen {
                    f
                } else {
                    let smooth = (old / wavelen - lo) / (hi - lo);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect()
    }

    /// Every tensor a model with this config has (Hugging Face names) and its shape.
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
        let bias = self.qkv_bias();
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
                if bias && QKV.contains(&n) {
                    out.push((format!("model.layers.{l}.{n}.bias"), vec![s[0]]));
                }
                out.push((format!("model.layers.{l}.{n}.weight"), s));
            }
        }
        out
    }

    /// Refuse what srlm cannot run exactly. Every loader calls this before using a size.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let arch = self.architecture()?;
        for (k, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("`{k}` is 0"));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
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
        if let Some(hd) = self.extra.get("head_dim").filter(|v| !v.is_null()) {
            if hd.as_u64() != Some(self.head_dim() as u64) {
                return bad(format!(
                    "head_dim {hd} is not hidden_size / num_attention_heads = {}; srlm \
                     supports only that",
                    self.head_dim()
                ));
            }
        }
        match self.extra.get("hidden_act").and_then(|v| v.as_str()) {
            None | Some("silu") => {}
            Some(a) => return bad(format!("hidden_act `{a}` is not supported (silu only)")),
        }
        let flag = |k: &str| self.extra.get(k).and_then(|v| v.as_bool()) == Some(true);
        if flag("attention_bias") && arch != Architecture::Qwen2 {
            return bad("attention_bias (biases on q/k/v/o) is not supported".into());
        }
        if flag("mlp_bias") {
            return bad("mlp_bias is not supported".into());
        }
        if arch == Architecture::Qwen2 && flag("use_sliding_window") {
            return bad("use_sliding_window (Qwen2's windowed layers) is not supported".into());
        }
        if let Some(f) = self
            .extra
            .get("partial_rotary_factor")
            .and_then(|v| v.as_f64())
        {
            if f != 1.0 {
                return bad(format!("partial_rotary_factor {f} is not supported"));
            }
        }
        self.rope_scaling()?;
        if let Some(t) = self
            .extra
            .get("rope_parameters")
            .and_then(|p| p.get("rope_theta"))
        {
            if t.as_f64().is_none() {
                return bad(format!("rope_parameters.rope_theta {t} is not a number"));
            }
        }
        if let Some(types) = self.extra.get("layer_types").and_then(|v| v.as_array()) {
            if let Some(t) = types.iter().find(|t| t.as_str() != Some("full_attention")) {
                return bad(format!(
                    "layer type {t} is not supported (full_attention only)"
                ));
            }
        }
        Ok(())
    }

    /// Parse `config.json` bytes (`path` names the file in errors) and validate.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = serde_json::from_slice(bytes).map_err(|e| ConfigError::Json {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&bytes, path)
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
            rope_theta: self.theta() as f32,
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
    use candle_core::quantized::gguf_file::Value;
    use std::collections::HashMap;

    fn smollm_like() -> ModelConfig {
        serde_json::from_str(
            r#"{"hidden_size":576,"intermediate_size":1536,"vocab_size":49152,
                "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
                "rms_norm_eps":1e-5,"rope_theta":100000.0,"max_position_embeddings":8192,
                "tie_word_embeddings":true,"model_type":"llama","torch_dtype":"bfloat16"}"#,
        )
        .unwrap()
    }

    fn with(mut cfg: ModelConfig, k: &str, v: serde_json::Value) -> ModelConfig {
        cfg.extra.insert(k.into(), v);
        cfg
    }

    #[test]
    fn json_keeps_unknown_fields_and_is_canonical() {
        let cfg = smollm_like();
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.kv_heads(), 3);
        assert_eq!(cfg.extra["torch_dtype"], "bfloat16");
        let bytes = cfg.to_json_bytes();
        let back: ModelConfig = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.to_json_bytes(), bytes);
    }

    #[test]
    fn gguf_metadata_round_trip() {
        let mut cfg = smollm_like();
        cfg.extra.clear();
        let md: HashMap<String, Value> = cfg.to_gguf_metadata().unwrap().into_iter().collect();
        let back = ModelConfig::from_gguf_metadata(&md).unwrap();
        assert_eq!(back.hidden_size, 576);
        assert_eq!(back.num_key_value_heads, Some(3));
        assert_eq!(back.rope_theta, 100000.0);
        assert_eq!(back.max_position_embeddings, 8192);
        assert!((back.rms_norm_eps - 1e-5).abs() < 1e-10);
        let qwen = with(smollm_like(), "model_type", "qwen2".into());
        let md: HashMap<String, Value> = qwen.to_gguf_metadata().unwrap().into_iter().collect();
        assert!(md.contains_key("qwen2.embedding_length"));
        let back = ModelConfig::from_gguf_metadata(&md).unwrap();
        assert_eq!(back.architecture().unwrap(), Architecture::Qwen2);
        assert!(back.qkv_bias());
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
        let mut cfg = smollm_like();
        cfg.num_attention_heads = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_attention_heads"));
        let mut md: HashMap<String, Value> = smollm_like()
            .to_gguf_metadata()
            .unwrap()
            .into_iter()
            .collect();
        md.insert("general.architecture".into(), Value::String("gpt2".into()));
        let err = ModelConfig::from_gguf_metadata(&md).unwrap_err();
        assert!(matches!(&err, ConfigError::Architecture(a) if a == "gpt2"));
        assert!(err.to_string().contains("Qwen2ForCausalLM"), "{err}");
        let gemma = with(
            smollm_like(),
            "architectures",
            serde_json::json!(["GemmaForCausalLM"]),
        );
        let err = gemma.validate().unwrap_err().to_string();
        assert!(
            err.contains("GemmaForCausalLM") && err.contains("MistralForCausalLM"),
            "{err}"
        );
    }

    #[test]
    fn refuses_what_it_cannot_run_exactly() {
        let cases = [
            (
                "rope_scaling",
                serde_json::json!({"type": "linear", "factor": 2.0}),
                "rope_scaling",
            ),
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
                "rope_scaling",
            ),
            ("hidden_act", "gelu".into(), "hidden_act"),
            ("attention_bias", true.into(), "attention_bias"),
            ("mlp_bias", true.into(), "mlp_bias"),
            ("head_dim", 128.into(), "head_dim"),
            ("partial_rotary_factor", 0.5.into(), "partial_rotary_factor"),
        ];
        for (k, v, needle) in cases {
            let err = with(smollm_like(), k, v)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{k}: {err}");
        }
        let qwen = with(smollm_like(), "model_type", "qwen2".into());
        let err = with(qwen, "use_sliding_window", true.into())
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("use_sliding_window"));
        // Mistral's window within the context: run up to the window only.
        let mistral = with(smollm_like(), "model_type", "mistral".into());
        let m = with(mistral, "sliding_window", 4096.into());
        m.validate().unwrap();
        assert_eq!(m.positions(), 4096);
        assert_eq!(smollm_like().positions(), 8192);
        let default = with(
            smollm_like(),
            "rope_scaling",
            serde_json::json!({"rope_type": "default"}),
        );
        default.validate().unwrap();
    }

    #[test]
    fn llama3_scaling_matches_transformers_bands() {
        let cfg = with(
            smollm_like(),
            "rope_scaling",
            serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        );
        cfg.validate().unwrap();
        let plain = smollm_like().inv_freq();
        let scaled = cfg.inv_freq();
        // Short wavelengths (< 8192 / 4) unchanged, long ones (> 8192) divided by 8.
        assert_eq!(plain[0], scaled[0]);
        let last = plain.len() - 1;
        assert!((scaled[last] - plain[last] / 8.0).abs() < 1e-12);
        assert!(scaled
            .iter()
            .zip(&plain)
            .all(|(s, p)| s <= p && *s >= p / 8.0 - 1e-12));
    }
}
