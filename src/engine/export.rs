//! Writing a model out for other tools: a Hugging Face folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`, `chat_template.jinja`, as
//! current transformers writes them) or a GGUF that llama.cpp loads (tokenizer and chat
//! template carried in its metadata).
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType};

use super::checkpoint::Loaded;
use super::weights::WeightsError;

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
