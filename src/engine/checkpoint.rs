//! Checkpoints: a folder loadable on its own — `config.json` (Hugging Face llama config),
//! `model.safetensors` (full weights) or `adapter.safetensors` (LoRA, with the base model's
//! path and BLAKE3 id), `tokenizer.json`, and `srlm-checkpoint.json` (format version, base,
//! LoRA parameters, chat template; the template also goes to `tokenizer_config.json`, where
//! Hugging Face tools look). A Hugging Face llama folder is thus also a checkpoint.
//! [`load`] also reads a GGUF file (dequantized to f32, as training needs).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::chat::{self, ChatError, ChatTemplate};
use super::config::ModelConfig;
use super::gguf::{GgufError, GgufFile};
use super::lora::{self, LoraConfig};
use super::weights::{Weights, WeightsError};

/// Format tag written into `srlm-checkpoint.json`.
pub const FORMAT: &str = "srlm.checkpoint/v1";
/// File names inside a checkpoint folder.
pub const META_FILE: &str = "srlm-checkpoint.json";
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const ADAPTER_FILE: &str = "adapter.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Errors saving or loading checkpoints, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid {what}: {msg}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        msg: String,
    },
    #[error("{0} already exists; choose a new checkpoint folder")]
    Exists(PathBuf),
    #[error(
        "{path}: base model {base} has BLAKE3 {actual}, the adapter was trained on {expected}"
    )]
    BaseMismatch {
        path: PathBuf,
        base: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{0}: not a model (expected a .gguf file, a Hugging Face llama folder or an srlm checkpoint)")]
    NotAModel(PathBuf),
    #[error("{0}: no tokenizer.json (a model folder needs its tokenizer)")]
    NoTokenizer(PathBuf),
    #[error("{path}: {source}")]
    Chat { path: PathBuf, source: ChatError },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{path}: {source}")]
    Candle {
        path: PathBuf,
        source: candle_core::Error,
    },
}

/// Full weights, or a LoRA adapter on a base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Lora,
}

/// The model an adapter applies to: where it was, and its content id (BLAKE3, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRef {
    pub path: PathBuf,
    pub blake3: String,
}

/// `srlm-checkpoint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
}

/// A loaded model, ready to build a trainable [`super::llama::Llama`] or the inference model.
pub struct Loaded {
    pub cfg: ModelConfig,
    /// Full f32 weights (a LoRA checkpoint's adapter already merged into its base).
    pub weights: Weights,
    /// `tokenizer.json` of a folder, or the tokenizer a GGUF's metadata describes.
    pub tokenizer: tokenizers::Tokenizer,
    /// The model's chat template (plain ChatML when it carries none).
    pub chat: ChatTemplate,
    /// The checkpoint's metadata, when it is an srlm checkpoint.
    pub meta: Option<CheckpointMeta>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Content id of a model: BLAKE3 of a file, or for a folder BLAKE3 over its sorted
/// `name\0blake3(file)\n` lines (regular files only, so the id ignores timestamps).
pub fn model_id(path: &Path) -> Result<blake3::Hash, CheckpointError> {
    let hash_file = |p: &Path| -> Result<blake3::Hash, CheckpointError> {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(p).map_err(io(p))?)
            .map_err(io(p))?;
        Ok(h.finalize())
    };
    if path.is_file() {
        return hash_file(path);
    }
    let mut names = vec![];
    for e in std::fs::read_dir(path).map_err(io(path))? {
        let e = e.map_err(io(path))?;
        if e.file_type().map_err(io(path))?.is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut h = blake3::Hasher::new();
    for n in names {
        h.update(n.as_bytes());
        h.update(b"\0");
        h.update(hash_file(&path.join(&n))?.to_hex().as_bytes());
        h.update(b"\n");
    }
    Ok(h.finalize())
}

/// Load any model path: a `.gguf` file, a Hugging Face llama folder, or an srlm checkpoint
/// (a LoRA one is merged into its base, whose id is checked first).
pub fn load(path: &Path) -> Result<Loaded, CheckpointError> {
    if path.is_file() {
        let (cfg, weights) = Weights::load_gguf(path)?;
        let g = GgufFile::open(path)?;
        let tokenizer = g.tokenizer()?;
        let chat = g.chat().map_err(|source| CheckpointError::Chat {
            path: path.to_owned(),
            source,
        })?;
        return Ok(Loaded {
            cfg,
            weights,
            tokenizer,
            chat,
            meta: None,
        });
    }
    if !path.join(CONFIG_FILE).is_file() {
        return Err(CheckpointError::NotAModel(path.to_owned()));
    }
    let meta = read_meta(path)?;
    let tokenizer =
        read_tokenizer(path)?.ok_or_else(|| CheckpointError::NoTokenizer(path.to_owned()))?;
    let chat = folder_chat(path, meta.as_ref(), &tokenizer)?;
    let (cfg, weights) = match &meta {
        Some(m) if m.kind == Kind::Lora => {
            let base = m.base.as_ref().ok_or_else(|| CheckpointError::Invalid {
                path: path.join(META_FILE),
                what: "checkpoint metadata",
                msg: "a LoRA checkpoint needs `base`".into(),
            })?;
            let lc = m.lora.as_ref().ok_or_else(|| CheckpointError::Invalid {
                path: path.join(META_FILE),
                what: "checkpoint metadata",
                msg: "a LoRA checkpoint needs `lora`".into(),
            })?;
            let base_path = if base.path.is_absolute() {
                base.path.clone()
            } else {
                path.join(&base.path)
            };
            let actual = model_id(&base_path)?.to_hex().to_string();
            if actual != base.blake3 {
                return Err(CheckpointError::BaseMismatch {
                    path: path.to_owned(),
                    base: base_path,
                    expected: base.blake3.clone(),
                    actual,
                });
            }
            let b = load(&base_path)?;
            let adapter = Weights::load_safetensors(&path.join(ADAPTER_FILE))?;
            let merged = lora::merge(&b.weights, &adapter, lc).map_err(|source| {
                CheckpointError::Candle {
                    path: path.join(ADAPTER_FILE),
                    source,
                }
            })?;
            (b.cfg, merged)
        }
        _ => Weights::load_hf_dir(path)?,
    };
    Ok(Loaded {
        cfg,
        weights,
        tokenizer,
        chat,
        meta,
    })
}

/// A folder's chat template: an srlm checkpoint's own, else `chat_template.jinja` or
/// `tokenizer_config.json`, with the special tokens `tokenizer_config.json` names (or
/// `config.json`'s ids resolve to); plain ChatML when the folder has no template.
fn folder_chat(
    dir: &Path,
    meta: Option<&CheckpointMeta>,
    tok: &tokenizers::Tokenizer,
) -> Result<ChatTemplate, CheckpointError> {
    let cerr = |path: PathBuf| move |source| CheckpointError::Chat { path, source };
    let found = match meta.and_then(|m| m.chat_template.clone()) {
        Some(t) => Some((t, dir.join(META_FILE))),
        None => chat::folder_template(dir).map_err(cerr(dir.to_owned()))?,
    };
    let Some((source, from)) = found else {
        return Ok(ChatTemplate::chatml());
    };
    let (bos, eos) = chat::folder_special_tokens(dir);
    let by_id = |key: &str| -> Option<String> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(CONFIG_FILE)).ok()?).ok()?;
        let id = match &v[key] {
            serde_json::Value::Array(a) => a.first()?.as_u64()?,
            x => x.as_u64()?,
        };
        tok.id_to_token(id as u32)
    };
    let bos = bos.or_else(|| by_id("bos_token_id")).unwrap_or_default();
    let eos = eos.or_else(|| by_id("eos_token_id")).unwrap_or_default();
    ChatTemplate::new(&source, &bos, &eos).map_err(cerr(from))
}

fn read_meta(dir: &Path) -> Result<Option<CheckpointMeta>, CheckpointError> {
    let p = dir.join(META_FILE);
    if !p.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&p).map_err(io(&p))?;
    let meta: CheckpointMeta =
        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Invalid {
            path: p.clone(),
            what: "checkpoint metadata",
            msg: e.to_string(),
        })?;
    if meta.format != FORMAT {
        return Err(CheckpointError::Invalid {
            path: p,
            what: "checkpoint metadata",
            msg: format!("format `{}`, this srlm reads `{FORMAT}`", meta.format),
        });
    }
    Ok(Some(meta))
}

fn read_tokenizer(dir: &Path) -> Result<Option<tokenizers::Tokenizer>, CheckpointError> {
    let p = dir.join(TOKENIZER_FILE);
    if !p.exists() {
        return Ok(None);
    }
    tokenizers::Tokenizer::from_file(&p)
        .map(Some)
        .map_err(|e| CheckpointError::Invalid {
            path: p,
            what: "tokenizer",
            msg: e.to_string(),
        })
}

/// What to write.
pub enum Contents<'a> {
    /// Full weights.
    Full(&'a Weights),
    /// LoRA matrices, their parameters and the base model they apply to.
    Lora {
        adapter: &'a Weights,
        lora: &'a LoraConfig,
        base: &'a Path,
    },
}

/// Write a checkpoint folder atomically: files go to a temporary sibling folder, are synced,
/// and the folder is renamed into place. An existing `dir` is never overwritten.
pub fn save(
    dir: &Path,
    cfg: &ModelConfig,
    contents: Contents<'_>,
    tokenizer: &tokenizers::Tokenizer,
    chat: Option<&ChatTemplate>,
) -> Result<(), CheckpointError> {
    let chat_template = chat.map(ChatTemplate::source);
    if dir.exists() {
        return Err(CheckpointError::Exists(dir.to_owned()));
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".srlm-checkpoint-")
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    let put = |name: &str, bytes: &[u8]| -> Result<(), CheckpointError> {
        let p = tmp.path().join(name);
        let mut f = std::fs::File::create(&p).map_err(io(&p))?;
        std::io::Write::write_all(&mut f, bytes).map_err(io(&p))?;
        f.sync_all().map_err(io(&p))
    };
    // A trained head on tied embeddings (LoRA on lm_head) is a separate tensor from then on.
    let mut cfg = cfg.clone();
    if let Contents::Full(w) = &contents {
        if w.get("lm_head.weight").is_some() {
            cfg.tie_word_embeddings = false;
        }
    }
    put(CONFIG_FILE, &cfg.to_json_bytes())?;
    let tok = tokenizer
        .to_string(false)
        .map_err(|e| CheckpointError::Invalid {
            path: dir.join(TOKENIZER_FILE),
            what: "tokenizer",
            msg: e.to_string(),
        })?;
    put(TOKENIZER_FILE, tok.as_bytes())?;
    if let Some(t) = chat_template {
        // Where Hugging Face tools (and srlm's inference loader) look for the template.
        let mut tc = serde_json::json!({ "chat_template": t });
        // The special tokens the template renders (ChatML's uses none: its bytes stay as
        // they were before srlm rendered templates).
        for (key, value) in [
            ("bos_token", chat.map(ChatTemplate::bos_token)),
            ("eos_token", chat.map(ChatTemplate::eos_token)),
        ] {
            if let Some(v) = value.filter(|_| t.contains(key)) {
                tc[key] = v.into();
            }
        }
        let mut json = serde_json::to_vec_pretty(&tc).expect("json serialises");
        json.push(b'\n');
        put("tokenizer_config.json", &json)?;
    }
    let meta = match contents {
        Contents::Full(w) => {
            put(WEIGHTS_FILE, &w.safetensors_bytes(&dir.join(WEIGHTS_FILE))?)?;
            CheckpointMeta {
                format: FORMAT.into(),
                kind: Kind::Full,
                base: None,
                lora: None,
                chat_template: chat_template.map(String::from),
            }
        }
        Contents::Lora {
            adapter,
            lora,
            base,
        } => {
            put(
                ADAPTER_FILE,
                &adapter.safetensors_bytes(&dir.join(ADAPTER_FILE))?,
            )?;
            let base_abs = std::path::absolute(base).map_err(io(base))?;
            CheckpointMeta {
                format: FORMAT.into(),
                kind: Kind::Lora,
                base: Some(BaseRef {
                    blake3: model_id(base)?.to_hex().to_string(),
                    path: base_abs,
                }),
                lora: Some(lora.clone()),
                chat_template: chat_template.map(String::from),
            }
        }
    };
    let mut json = serde_json::to_vec_pretty(&meta).expect("metadata serialises");
    json.push(b'\n');
    put(META_FILE, &json)?;
    let kept = tmp.keep();
    std::fs::rename(&kept, dir).map_err(|source| {
        let _ = std::fs::remove_dir_all(&kept);
        CheckpointError::Io {
            path: dir.to_owned(),
            source,
        }
    })?;
    if let Ok(d) = std::fs::File::open(&parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_without_a_tokenizer_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        crate::engine::fixture::write_tiny_model(t.path(), 3).unwrap();
        std::fs::remove_file(t.path().join(TOKENIZER_FILE)).unwrap();
        let err = load(t.path()).err().unwrap().to_string();
        assert!(err.contains("no tokenizer.json"), "{err}");
    }

    #[test]
    fn a_template_that_does_not_compile_names_its_file_and_line() {
        let t = tempfile::tempdir().unwrap();
        crate::engine::fixture::write_tiny_model(t.path(), 3).unwrap();
        std::fs::write(
            t.path().join("chat_template.jinja"),
            "{% for m in messages %}\n{{ m.content }\n{% endfor %}",
        )
        .unwrap();
        let err = load(t.path()).err().unwrap().to_string();
        assert!(
            err.contains("chat_template.jinja") && err.contains("line 2"),
            "{err}"
        );
    }
}
