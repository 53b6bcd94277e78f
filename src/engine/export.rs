//! Writing a model out for other tools: a Hugging Face folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`, as
//! current transformers writes them) or a GGUF that llama.cpp loads (tokenizer and chat
//! template carried in its metadata).
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType};

use super::chat::ChatTemplate;
use super::checkpoint::Loaded;
use super::config::ModelConfig;
use super::weights::{hf_to_gguf_name, permute_qk, Weights, WeightsError};
use candle_core::quantized::QTensor;
use candle_core::DType;

/// The files of a Hugging Face export.
pub const HF_FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
];

/// Errors exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0} already exists; choose a new output path")]
    Exists(PathBuf),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("the tokenizer cannot be written as GGUF metadata: {0}")]
    GgufTokenizer(String),
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write `model` as a Hugging Face folder `dir` (which must not exist): f32 safetensors, the
/// tokenizer, its special tokens and the chat template in `chat_template.jinja`.
pub fn write_hf(model: &Loaded, dir: &Path) -> Result<(), ExportError> {
    if dir.exists() {
        return Err(ExportError::Exists(dir.to_owned()));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let put = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(io(&p))
    };
    put("config.json", &model.cfg.to_json_bytes())?;
    let st = dir.join("model.safetensors");
    put("model.safetensors", &model.weights.safetensors_bytes(&st)?)?;
    let tok = model
        .tokenizer
        .to_string(false)
        .map_err(|e| ExportError::Tokenizer {
            path: dir.join("tokenizer.json"),
            message: e.to_string(),
        })?;
    put("tokenizer.json", tok.as_bytes())?;
    let mut tc = serde_json::json!({ "tokenizer_class": "PreTrainedTokenizerFast" });
    for (k, v) in [
        ("bos_token", model.chat.bos_token()),
        ("eos_token", model.chat.eos_token()),
    ] {
        if !v.is_empty() {
            tc[k] = v.into();
        }
    }
    let mut json = serde_json::to_vec_pretty(&tc).expect("json serialises");
    json.push(b'\n');
    put("tokenizer_config.json", &json)?;
    put("chat_template.jinja", model.chat.source().as_bytes())
}

/// Write `model` as a GGUF file `path` with matrices of type `dtype`, carrying `tokenizer`
/// metadata (a base GGUF's `tokenizer.*` keys) and the model's chat template.
pub fn write_gguf(
    model: &Loaded,
    tokenizer: &[(String, gguf_file::Value)],
    path: &Path,
    dtype: GgmlDType,
) -> Result<(), ExportError> {
    if path.exists() {
        return Err(ExportError::Exists(path.to_owned()));
    }
    let mut extra: Vec<(String, gguf_file::Value)> = tokenizer
        .iter()
        .filter(|(k, _)| k != "tokenizer.chat_template")
        .cloned()
        .collect();
    extra.push((
        "tokenizer.chat_template".into(),
        gguf_file::Value::String(model.chat.source().to_owned()),
    ));
    Ok(model.weights.export_gguf(&model.cfg, &extra, path, dtype)?)
}

/// `tokenizer.ggml.*` metadata for a byte-level BPE tokenizer of the kind srlm builds from a
/// GGUF (SmolLM2's: digits split one by one, then GPT-2's byte-level split): what llama.cpp
/// needs to tokenize as srlm does. Other tokenizers are refused rather than described wrongly.
pub fn gguf_tokenizer(
    tok: &tokenizers::Tokenizer,
    chat: &ChatTemplate,
) -> Result<Vec<(String, gguf_file::Value)>, ExportError> {
    use gguf_file::Value;
    let bad = |m: &str| ExportError::GgufTokenizer(m.to_owned());
    let json: serde_json::Value = serde_json::from_str(
        &tok.to_string(false)
            .map_err(|e| ExportError::GgufTokenizer(e.to_string()))?,
    )
    .map_err(|e| ExportError::GgufTokenizer(e.to_string()))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(bad("not a BPE tokenizer"));
    }
    let pre = &json["pre_tokenizer"];
    let kinds: Vec<&str> = pre["pretokenizers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["type"].as_str()).collect())
        .unwrap_or_default();
    if kinds != ["Digits", "ByteLevel"] || pre["pretokenizers"][0]["individual_digits"] != true {
        return Err(bad(
            "its pre-tokenizer is not SmolLM2's (digits, then byte-level)",
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("no vocabulary"))?;
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, id) in vocab {
        let id = id.as_u64().ok_or_else(|| bad("a non-numeric token id"))? as usize;
        *tokens
            .get_mut(id)
            .ok_or_else(|| bad("token ids are not 0..n"))? = t.clone();
    }
    let mut types = vec![1i32; tokens.len()];
    for a in json["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), true) = (a["id"].as_u64(), a["special"] == true) {
            if let Some(t) = types.get_mut(id as usize) {
                *t = 3;
            }
        }
    }
    let merges: Vec<String> = model["merges"]
        .as_array()
        .ok_or_else(|| bad("no merges"))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Array(p) => match (p.first(), p.get(1)) {
                (Some(a), Some(b)) => Ok(format!(
                    "{} {}",
                    a.as_str().unwrap_or(""),
                    b.as_str().unwrap_or("")
                )),
                _ => Err(bad("a merge is not a pair")),
            },
            _ => Err(bad("a merge is not a string or pair")),
        })
        .collect::<Result<_, _>>()?;
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_owned(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_owned(),
            Value::String("smollm".into()),
        ),
        ("tokenizer.ggml.tokens".to_owned(), strings(tokens)),
        (
            "tokenizer.ggml.token_type".to_owned(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".to_owned(), strings(merges)),
    ];
    for (key, token) in [
        ("tokenizer.ggml.bos_token_id", chat.bos_token()),
        ("tokenizer.ggml.eos_token_id", chat.eos_token()),
    ] {
        if let Some(id) = tok.token_to_id(token) {
            md.push((key.to_owned(), Value::U32(id)));
        }
    }
    Ok(md)
}

impl Weights {
    /// Write these weights as a llama GGUF that llama.cpp and candle's quantized llama load:
    /// q/k rows permuted back to the rotary layout, matrices quantized to `dtype` (1-D norms
    /// stay f32), `extra` metadata (e.g. the base GGUF's `tokenizer.*` keys) appended.
    pub fn export_gguf(
        &self,
        cfg: &ModelConfig,
        extra: &[(String, gguf_file::Value)],
        path: &Path,
        dtype: GgmlDType,
    ) -> Result<(), WeightsError> {
        let cerr = |source| WeightsError::Candle {
            path: path.into(),
            source,
        };
        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        // llama.cpp's order: embeddings, blocks in order, final norm, output.
        let mut names: Vec<(String, String)> = self
            .0
            .keys()
            .filter_map(|hf| hf_to_gguf_name(hf).map(|g| (g, hf.clone())))
            .collect();
        names.sort_by_key(|(g, _)| gguf_order(g));
        let interleaved = cfg.architecture()?.gguf_interleaved();
        for (g, hf) in names {
            let mut t = self.0[&hf].to_dtype(DType::F32).map_err(cerr)?;
            if interleaved && hf.ends_with("q_proj.weight") {
                t = permute_qk(&t, cfg.num_attention_heads, false).map_err(cerr)?;
            } else if interleaved && hf.ends_with("k_proj.weight") {
                t = permute_qk(&t, cfg.kv_heads(), false).map_err(cerr)?;
            }
            let block = dtype.block_size();
            let dt = if t.rank() == 1 || t.dim(1).map_err(cerr)? % block != 0 {
                GgmlDType::F32
            } else {
                dtype
            };
            tensors.push((g, QTensor::quantize(&t, dt).map_err(cerr)?));
        }
        let mut md = cfg.to_gguf_metadata()?;
        md.push((
            "general.file_type".into(),
            gguf_file::Value::U32(file_type(dtype)),
        ));
        md.push((
            "general.quantization_version".into(),
            gguf_file::Value::U32(2),
        ));
        for (k, v) in extra {
            if !md.iter().any(|(mk, _)| mk == k) {
                md.push((k.clone(), v.clone()));
            }
        }
        let md_refs: Vec<(&str, &gguf_file::Value)> =
            md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut buf = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut buf, &md_refs, &t_refs).map_err(cerr)?;
        std::fs::write(path, buf.into_inner()).map_err(|source| WeightsError::Io {
            path: path.into(),
            source,
        })
    }
}

/// Sort key for GGUF tensor names: token_embd, blk.0.*, blk.1.*, ..., output_norm, output.
fn gguf_order(name: &str) -> (usize, usize, String) {
    if name.starts_with("token_embd") {
        (0, 0, name.into())
    } else if let Some(rest) = name.strip_prefix("blk.") {
        let layer = rest
            .split('.')
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(usize::MAX);
        (1, layer, name.into())
    } else {
        (2, 0, name.into())
    }
}

/// llama.cpp's `general.file_type` code for a tensor type.
fn file_type(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q8_0 => 7,
        GgmlDType::Q5_0 => 8,
        GgmlDType::Q5_1 => 9,
        GgmlDType::Q4K => 15,
        GgmlDType::Q6K => 18,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::checkpoint;

    /// A folder (the tiny model, byte-level BPE) exported to GGUF loads back with the same
    /// weights, tokenizer and template; a Hugging Face export loads back as the same model.
    #[test]
    fn exports_load_back() {
        let t = tempfile::tempdir().unwrap();
        crate::engine::fixture::write_tiny_model(&t.path().join("m"), 4).unwrap();
        let m = checkpoint::load(&t.path().join("m")).unwrap();
        let md = gguf_tokenizer(&m.tokenizer, &m.chat).unwrap();
        let g = t.path().join("m.gguf");
        write_gguf(&m, &md, &g, GgmlDType::F32).unwrap();
        let back = checkpoint::load(&g).unwrap();
        assert_eq!(back.chat.source(), m.chat.source());
        let text = "<|im_start|>user\nthe answer is 42<|im_end|>";
        assert_eq!(
            back.tokenizer.encode(text, false).unwrap().get_ids(),
            m.tokenizer.encode(text, false).unwrap().get_ids()
        );
        for (name, w) in &m.weights.0 {
            let d = crate::engine::llama::tests::max_abs_diff(w, back.weights.get(name).unwrap());
            assert_eq!(d, 0.0, "{name}");
        }
        assert!(matches!(
            write_gguf(&m, &md, &g, GgmlDType::F32),
            Err(ExportError::Exists(_))
        ));
        let hf = t.path().join("hf");
        write_hf(&back, &hf).unwrap();
        let again = checkpoint::load(&hf).unwrap();
        assert_eq!(again.chat, m.chat);
        assert_eq!(again.cfg.hidden_size, m.cfg.hidden_size);
        for n in HF_FILES {
            assert!(hf.join(n).is_file(), "{n}");
        }
    }
}
