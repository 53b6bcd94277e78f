//! Full-precision weights under Hugging Face tensor names, loaded from a GGUF (every
//! tensor dequantized, q/k rows un-permuted from llama.cpp's rotary layout), a Hugging Face
//! folder (one or sharded safetensors), or written back out as safetensors (GGUF: `export`).
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use super::config::{ConfigError, ModelConfig};
use super::gguf::{GgufError, GgufFile};

/// Errors loading or writing weights; each names the file and, where known, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Candle {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error("{path}: tensor `{name}`: {msg}")]
    Tensor {
        path: PathBuf,
        name: String,
        msg: String,
    },
    #[error("{path}: invalid shard index: {msg}")]
    Index { path: PathBuf, msg: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

/// Weights in f32 on the CPU, keyed by Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
/// A `BTreeMap` so every iteration (saving, hashing, optimiser) runs in one fixed order.
#[derive(Debug, Clone, Default)]
pub struct Weights(pub BTreeMap<String, Tensor>);

/// GGUF tensor name stem -> Hugging Face name stem, for the per-layer tensors.
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// Map a GGUF tensor name to its Hugging Face name (None for a name srlm does not know).
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    let (stem, kind) = name
        .strip_suffix(".weight")
        .map(|s| (s, "weight"))
        .or_else(|| name.strip_suffix(".bias").map(|s| (s, "bias")))?;
    match (stem, kind) {
        ("token_embd", "weight") => return Some("model.embed_tokens.weight".into()),
        ("output_norm", "weight") => return Some("model.norm.weight".into()),
        ("output", "weight") => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = stem.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = LAYER_NAMES.iter().find(|(g, _)| *g == part)?.1;
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The reverse of [`gguf_to_hf_name`].
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (rest, kind) = rest
        .strip_suffix(".weight")
        .map(|s| (s, "weight"))
        .or_else(|| rest.strip_suffix(".bias").map(|s| (s, "bias")))?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let g = LAYER_NAMES.iter().find(|(_, h)| *h == part)?.0;
    Some(format!("blk.{layer}.{g}.{kind}"))
}

/// Whether a file name from a shard index is a plain name inside the folder (no directory
/// part, no `..`, not absolute): an index must not point outside its model.
pub fn is_plain_file_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && !name.contains(['/', '\\'])
        && name != ".."
        && name != "."
        && p.file_name().and_then(|f| f.to_str()) == Some(name)
}

/// The safetensors files of a Hugging Face folder: `model.safetensors`, or the shards that
/// `model.safetensors.index.json` names (checked to be plain file names in the folder).
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let bytes = std::fs::read(&index).map_err(|source| WeightsError::Io {
        path: index.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| WeightsError::Index {
            path: index.clone(),
            msg: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| WeightsError::Index {
            path: index.clone(),
            msg: "field `weight_map` is missing or not an object".into(),
        })?;
    let mut shards = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| WeightsError::Index {
            path: index.clone(),
            msg: format!("weight_map `{tensor}`: the file is not a string"),
        })?;
        if !is_plain_file_name(file) {
            return Err(WeightsError::Index {
                path: index.clone(),
                msg: format!("weight_map `{tensor}`: `{file}` is not a plain file name"),
            });
        }
        shards.insert(file.to_owned());
    }
    Ok(shards.into_iter().map(|f| dir.join(f)).collect())
}

/// llama.cpp stores q/k projection rows per head as (hd/2, 2) pairs for its interleaved rope;
/// Hugging Face stores them as (2, hd/2) halves. Swapping the two middle axes converts one way;
/// `to_hf` picks the direction (they differ only in the split of the head dimension).
pub fn permute_qk(w: &Tensor, heads: usize, to_hf: bool) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let hd = rows / heads;
    let (a, b) = if to_hf { (hd / 2, 2) } else { (2, hd / 2) };
    w.reshape((heads, a, b, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

impl Weights {
    /// Get a tensor by Hugging Face name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.get(name)
    }

    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.0.values().map(|t| t.elem_count()).sum()
    }

    /// Check that every tensor the config needs is present with the right shape, and that
    /// there is no other (a bias or layer srlm would silently leave out).
    pub fn check(&self, cfg: &ModelConfig, path: &Path) -> Result<(), WeightsError> {
        let want = cfg.tensor_shapes();
        if let Some(extra) = self.0.keys().find(|k| !want.iter().any(|(n, _)| n == *k)) {
            return Err(WeightsError::Tensor {
                path: path.to_owned(),
                name: extra.clone(),
                msg: format!(
                    "not a tensor of the {} model config.json describes",
                    cfg.architecture().map(|a| a.hf_names().0).unwrap_or("?")
                ),
            });
        }
        for (name, shape) in want {
            match self.0.get(&name) {
                None => {
                    return Err(WeightsError::Tensor {
                        path: path.to_owned(),
                        name,
                        msg: "missing".into(),
                    })
                }
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(WeightsError::Tensor {
                        path: path.to_owned(),
                        name,
                        msg: format!("shape {:?}, config needs {shape:?}", t.dims()),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Write all tensors as one safetensors file (f32, names sorted: the same weights always
    /// give the same bytes).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), WeightsError> {
        let bytes = self.safetensors_bytes(path)?;
        std::fs::write(path, bytes).map_err(|source| WeightsError::Io {
            path: path.into(),
            source,
        })
    }

    /// The safetensors serialisation of these weights (see [`Weights::save_safetensors`]).
    pub fn safetensors_bytes(&self, path: &Path) -> Result<Vec<u8>, WeightsError> {
        let views: Vec<(String, Tensor)> = self
            .0
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_dtype(DType::F32)?.contiguous()?)))
            .collect::<candle_core::Result<_>>()
            .map_err(|source| WeightsError::Candle {
                path: path.into(),
                source,
            })?;
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = views
            .iter()
            .map(|(k, t)| {
                let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Ok((k.clone(), bytes, t.dims().to_vec()))
            })
            .collect::<candle_core::Result<_>>()
            .map_err(|source| WeightsError::Candle {
                path: path.into(),
                source,
            })?;
        let tviews: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
            .iter()
            .map(|(k, b, s)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    s.clone(),
                    b.as_slice(),
                )
                .expect("shape matches data");
                (k.clone(), view)
            })
            .collect();
        safetensors::serialize(tviews, None).map_err(|e| WeightsError::Tensor {
            path: path.into(),
            name: "*".into(),
            msg: e.to_string(),
        })
    }

    /// Read one safetensors file (any float dtype, converted to f32).
    pub fn load_safetensors(path: &Path) -> Result<Self, WeightsError> {
        let map = candle_core::safetensors::load(path, &Device::Cpu).map_err(|source| {
            WeightsError::Candle {
                path: path.into(),
                source,
            }
        })?;
        let mut out = BTreeMap::new();
        for (k, t) in map {
            if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
                return Err(WeightsError::Tensor {
                    path: path.into(),
                    name: k,
                    msg: format!("dtype {:?} is not supported (f32, f16, bf16)", t.dtype()),
                });
            }
            let t = t
                .to_dtype(DType::F32)
                .map_err(|source| WeightsError::Candle {
                    path: path.into(),
                    source,
                })?;
            out.insert(k, t);
        }
        Ok(Self(out))
    }

    /// Load a Hugging Face folder: `config.json` plus `model.safetensors` or the shards listed
    /// in `model.safetensors.index.json` (f32, f16 or bf16; held as f32). Every tensor must
    /// be one the config describes, with its shape.
    pub fn load_hf_dir(dir: &Path) -> Result<(ModelConfig, Self), WeightsError> {
        let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
        let mut all = BTreeMap::new();
        for f in safetensors_files(dir)? {
            for (k, t) in Self::load_safetensors(&f)?.0 {
                if all.contains_key(&k) {
                    return Err(WeightsError::Tensor {
                        path: f.clone(),
                        name: k,
                        msg: "also in another shard".into(),
                    });
                }
                all.insert(k, t);
            }
        }
        // Buffers older transformers saved; not parameters.
        all.retain(|k, _| !k.ends_with(".rotary_emb.inv_freq"));
        let weights = Self(all);
        if cfg.tie_word_embeddings && weights.0.contains_key("lm_head.weight") {
            // A tied model may still save the (identical) head: use the embeddings.
            let mut w = weights;
            w.0.remove("lm_head.weight");
            w.check(&cfg, dir)?;
            return Ok((cfg, w));
        }
        weights.check(&cfg, dir)?;
        Ok((cfg, weights))
    }

    /// Load a GGUF: check its metadata against its tensors, dequantize every tensor to f32
    /// and (architecture `llama`) un-permute q/k rows.
    pub fn load_gguf(path: &Path) -> Result<(ModelConfig, Self), WeightsError> {
        let cerr = |source| WeightsError::Candle {
            path: path.into(),
            source,
        };
        let mut g = GgufFile::open(path)?;
        let cfg = g.config()?;
        let interleaved = cfg.architecture()?.gguf_interleaved();
        let mut names: Vec<String> = g.content.tensor_infos.keys().cloned().collect();
        names.sort();
        let mut out = BTreeMap::new();
        for name in names {
            let hf = gguf_to_hf_name(&name).expect("checked by GgufFile::config");
            let GgufFile { content, file, .. } = &mut g;
            let q = content.tensor(file, &name, &Device::Cpu).map_err(cerr)?;
            let mut t = q.dequantize(&Device::Cpu).map_err(cerr)?;
            if interleaved && hf.ends_with("q_proj.weight") {
                t = permute_qk(&t, cfg.num_attention_heads, true).map_err(cerr)?;
            } else if interleaved && hf.ends_with("k_proj.weight") {
                t = permute_qk(&t, cfg.kv_heads(), true).map_err(cerr)?;
            }
            out.insert(hf, t);
        }
        let w = Self(out);
        w.check(&cfg, path)?;
        Ok((cfg, w))
    }
}

/// The `tokenizer.*` metadata of a GGUF (to carry into an exported GGUF).
pub fn gguf_tokenizer_metadata(
    path: &Path,
) -> Result<Vec<(String, gguf_file::Value)>, WeightsError> {
    let mut file = std::fs::File::open(path).map_err(|source| WeightsError::Io {
        path: path.into(),
        source,
    })?;
    let content = gguf_file::Content::read(&mut file).map_err(|source| WeightsError::Candle {
        path: path.into(),
        source,
    })?;
    let mut v: Vec<(String, gguf_file::Value)> = content
        .metadata
        .into_iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

/// Weights as a name -> tensor HashMap (what candle's `VarBuilder::from_tensors` takes).
pub fn to_hashmap(w: &Weights) -> HashMap<String, Tensor> {
    w.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::llama::tests::max_abs_diff;
    use candle_core::quantized::GgmlDType;

    #[test]
    fn names_map_both_ways() {
        for g in [
            "token_embd.weight",
            "output_norm.weight",
            "output.weight",
            "blk.12.attn_q.weight",
            "blk.0.ffn_norm.weight",
        ] {
            let hf = gguf_to_hf_name(g).unwrap();
            assert_eq!(hf_to_gguf_name(&hf).unwrap(), g);
        }
        assert_eq!(
            gguf_to_hf_name("blk.3.attn_k.weight").unwrap(),
            "model.layers.3.self_attn.k_proj.weight"
        );
        assert_eq!(gguf_to_hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn qk_permutation_is_llama_cpp_layout_and_inverts() {
        // 2 heads of dim 4, 1 input column: HF rows per head are [x0 x1 | y0 y1] (halves);
        // llama.cpp interleaves them as [x0 y0 x1 y1].
        let hf = Tensor::new(
            &[[0f32], [1.], [2.], [3.], [10.], [11.], [12.], [13.]],
            &Device::Cpu,
        )
        .unwrap();
        let gg = permute_qk(&hf, 2, false).unwrap();
        let v: Vec<f32> = gg.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [0., 2., 1., 3., 10., 12., 11., 13.]);
        let back = permute_qk(&gg, 2, true).unwrap();
        let v: Vec<f32> = back.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, [0., 1., 2., 3., 10., 11., 12., 13.]);
    }

    #[test]
    fn exported_gguf_loads_back_and_runs_in_candles_quantized_llama() {
        use crate::engine::llama::{tests::tiny, Llama, Trainable};
        let (mut cfg, w) = tiny(31);
        // Quantized matmuls need rows that are a multiple of the block size (32).
        cfg.extra.clear();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        w.export_gguf(&cfg, &[], &path, GgmlDType::F32).unwrap();
        let (cfg2, w2) = Weights::load_gguf(&path).unwrap();
        assert_eq!(cfg2.num_key_value_heads, Some(2));
        assert!(cfg2.tie_word_embeddings);
        for (name, t) in &w.0 {
            let d: f32 = max_abs_diff(t, w2.get(name).unwrap());
            assert_eq!(d, 0.0, "{name} changed in the GGUF round trip");
        }
        // candle's quantized llama reads the llama.cpp layout: its logits must match ours.
        let ids = [3u32, 9, 27, 1, 44, 12];
        let mut f = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut f).unwrap();
        let mut q = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
            content,
            &mut f,
            &Device::Cpu,
        )
        .unwrap();
        let input = Tensor::new(&ids[..], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want: Vec<f32> = q
            .forward(&input, 0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        let ours = Llama::new(&cfg, &w, &Trainable::None)
            .unwrap()
            .forward(&input)
            .unwrap();
        let got: Vec<f32> = ours
            .squeeze(0)
            .unwrap()
            .get(ids.len() - 1)
            .unwrap()
            .to_vec1()
            .unwrap();
        let diff = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "quantized llama disagrees by {diff}");
    }

    /// A copy of a committed fixture model to break.
    fn copy_fixture(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let src = crate::engine::families::fixture(name);
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        (t, dir)
    }

    fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
    }

    fn load_err(dir: &Path) -> String {
        Weights::load_hf_dir(dir).unwrap_err().to_string()
    }

    #[test]
    fn shard_index_may_not_leave_the_folder() {
        for bad in [
            "../model-00001-of-00004.safetensors",
            "/etc/passwd",
            "a/b.safetensors",
            "..",
        ] {
            let (_t, dir) = copy_fixture("qwen2-untied");
            edit_json(&dir.join("model.safetensors.index.json"), |v| {
                v["weight_map"]["model.norm.weight"] = bad.into();
            });
            let err = load_err(&dir);
            assert!(
                err.contains("not a plain file name") && err.contains(bad),
                "{bad}: {err}"
            );
        }
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
    }

    #[test]
    fn unsupported_architectures_and_shapes_are_named() {
        let (_t, dir) = copy_fixture("qwen2-tied");
        edit_json(&dir.join("config.json"), |v| {
            v["architectures"] = serde_json::json!(["GemmaForCausalLM"]);
        });
        let err = load_err(&dir);
        assert!(
            err.contains("GemmaForCausalLM") && err.contains("Qwen2ForCausalLM"),
            "{err}"
        );
        // A Qwen2 checkpoint that claims to be a llama: its biases are not silently dropped.
        edit_json(&dir.join("config.json"), |v| {
            v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
            v["model_type"] = "llama".into();
        });
        let err = load_err(&dir);
        assert!(
            err.contains(".bias") && err.contains("LlamaForCausalLM"),
            "{err}"
        );
        edit_json(&dir.join("config.json"), |v| {
            v["architectures"] = serde_json::json!(["Qwen2ForCausalLM"]);
            v["model_type"] = "qwen2".into();
            v["intermediate_size"] = 128.into();
        });
        let err = load_err(&dir);
        assert!(err.contains("mlp.") && err.contains("shape"), "{err}");
        edit_json(&dir.join("config.json"), |v| {
            v["intermediate_size"] = 96.into();
            v["num_attention_heads"] = 0.into();
        });
        let err = load_err(&dir);
        assert!(err.contains("num_attention_heads"), "{err}");
        edit_json(&dir.join("config.json"), |v| {
            v["num_attention_heads"] = 4.into();
            v["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
        });
        let err = load_err(&dir);
        assert!(err.contains("yarn"), "{err}");
    }

    #[test]
    fn gguf_whose_metadata_contradicts_its_tensors_is_refused() {
        use crate::engine::llama::tests::tiny;
        let (mut cfg, w) = tiny(5);
        cfg.extra.clear();
        cfg.intermediate_size += 32;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.gguf");
        w.export_gguf(&cfg, &[], &path, GgmlDType::F32).unwrap();
        let err = Weights::load_gguf(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.gguf") && err.contains("ffn_") && err.contains("shape"),
            "{err}"
        );
        let err = crate::engine::model::load(&path, crate::engine::model::WeightMode::Auto)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("ffn_") && err.contains("metadata implies"),
            "{err}"
        );
    }
}
