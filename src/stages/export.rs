//! `export`: a model (a checkpoint, a Hugging Face folder or a GGUF, committed or in the
//! working tree) written for other tools, as a recorded stage: a GGUF for llama.cpp / Ollama
//! (matrices as f32, f16, q8_0 or q4_1; tokenizer and chat template in its metadata) or a
//! Hugging Face folder for transformers. The output is committed with lineage back to the
//! model it came from.
use serde::{Deserialize, Serialize};

use super::model_io::{metrics_of, model_path, params};
use super::record::{Metrics, StageFailure, StageIo};
use crate::engine::checkpoint;
use crate::engine::export::{self, HF_FILES};
use candle_core::quantized::GgmlDType;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Gguf,
    Hf,
}

/// Matrix type of a GGUF export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WeightType {
    F32,
    F16,
    #[value(name = "q8_0")]
    #[serde(rename = "q8_0")]
    Q8_0,
    #[value(name = "q4_1")]
    #[serde(rename = "q4_1")]
    Q4_1,
}

impl WeightType {
    fn ggml(self) -> GgmlDType {
        match self {
            WeightType::F32 => GgmlDType::F32,
            WeightType::F16 => GgmlDType::F16,
            WeightType::Q8_0 => GgmlDType::Q8_0,
            WeightType::Q4_1 => GgmlDType::Q4_1,
        }
    }
}

/// Parameters as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportParams {
    pub format: Format,
    /// GGUF only (default q8_0); a Hugging Face folder is always f32.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub weight_type: Option<WeightType>,
}

/// The stage's outputs for `format`, written at `out` (relative to the working tree): the
/// GGUF file, or the checkpoint folder.
pub fn outputs(format: Format, out: &str) -> Vec<(String, String)> {
    match format {
        Format::Gguf => vec![("gguf".into(), out.into())],
        // one checkpoint folder: one role, one unit
        Format::Hf => vec![("model".into(), out.trim_end_matches('/').into())],
    }
}

#[derive(Serialize)]
struct ExportMetrics {
    format: Format,
    parameters: usize,
    architecture: String,
}

/// `export`: input `model`; outputs as [`outputs`] lists.
pub fn export(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let p: ExportParams = params(io)?;
    let src = model_path(io, "model")?;
    let loaded = checkpoint::load(&src.path)?;
    let first = io.outputs.values().next().ok_or("no output")?.clone();
    let parent = first.parent().ok_or("output has no folder")?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".srlm-export-")
        .tempdir_in(parent)?;
    match p.format {
        Format::Hf => {
            if p.weight_type.is_some_and(|t| t != WeightType::F32) {
                return Err("a Hugging Face export is f32; --type applies to GGUF".into());
            }
            let dir = tmp.path().join("hf");
            export::write_hf(&loaded, &dir)?;
            for n in HF_FILES {
                // the folder as one role; records from before units name one role per file
                let dst = match io.outputs.get("model") {
                    Some(d) => d.join(n),
                    None => io
                        .outputs
                        .get(&format!("model/{n}"))
                        .ok_or_else(|| format!("no output `model/{n}`"))?
                        .clone(),
                };
                std::fs::create_dir_all(dst.parent().ok_or("output has no folder")?)?;
                std::fs::rename(dir.join(n), &dst)?;
            }
        }
        Format::Gguf => {
            let tokenizer = if src.path.is_file() {
                crate::engine::weights::gguf_tokenizer_metadata(&src.path)?
            } else {
                export::gguf_tokenizer(&loaded.tokenizer, &loaded.chat)?
            };
            let ty = p.weight_type.unwrap_or(WeightType::Q8_0);
            let f = tmp.path().join("model.gguf");
            export::write_gguf(&loaded, &tokenizer, &f, ty.ggml())?;
            let dst = io.outputs.get("gguf").ok_or("no output `gguf`")?;
            std::fs::rename(&f, dst)?;
        }
    }
    let arch = loaded.cfg.architecture()?.hf_names().0.to_owned();
    Ok(metrics_of(&ExportMetrics {
        format: p.format,
        parameters: loaded.weights.num_params(),
        architecture: arch,
    }))
}
