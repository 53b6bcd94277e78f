//! A tiny random-weight llama written as a Hugging Face folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`), so tests can load,
//! generate, judge and train in well under a second. Same seed, same bytes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::tokenizer::{build_byte_level_bpe, BpeSpec};

/// Errors writing the fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the fixture tokenizer: {0}")]
    Tokenizer(String),
    #[error("serialising the fixture weights: {0}")]
    Safetensors(String),
}

/// ChatML, as SmolLM2 uses it, without a default system prompt.
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Special tokens at ids 0, 1, 2, as in SmolLM2.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A few merges so the BPE does real merging (byte-level alphabet: `Ġ` is a space).
const MERGES: &[(&str, &str)] = &[
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("S", "c"),
    ("Sc", "o"),
    ("Sco", "r"),
    ("Scor", "e"),
    ("a", "n"),
    ("e", "r"),
    ("o", "r"),
    ("Ġ", "a"),
];

/// Shape of the tiny llama.
#[derive(Debug, Clone, PartialEq)]
pub struct TinySpec {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub tie_word_embeddings: bool,
    /// Standard deviation-ish scale of the random weights (uniform in ±scale·√3).
    pub init_scale: f32,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            tie_word_embeddings: true,
            init_scale: 0.1,
        }
    }
}

/// The fixture tokenizer's vocabulary: specials, the 256 byte-level symbols, then merges.
fn tiny_bpe_spec() -> BpeSpec {
    let mut tokens: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    tokens.extend(alphabet.into_iter().map(String::from));
    let merges: Vec<(String, String)> = MERGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for (a, b) in &merges {
        tokens.push(format!("{a}{b}"));
    }
    BpeSpec {
        tokens,
        merges,
        special_ids: vec![0, 1, 2],
    }
}

/// Write the default tiny llama into `dir` (created if missing).
pub fn write_tiny_model(dir: &Path, seed: u64) -> Result<(), FixtureError> {
    write_tiny_model_with(dir, seed, &TinySpec::default())
}

/// Write a tiny llama of the given shape into `dir` (created if missing).
pub fn write_tiny_model_with(dir: &Path, seed: u64, spec: &TinySpec) -> Result<(), FixtureError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FixtureError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;

    let bpe = tiny_bpe_spec();
    let vocab_size = bpe.tokens.len();
    let tok = build_byte_level_bpe(&bpe).map_err(|e| FixtureError::Tokenizer(e.to_string()))?;
    let tok_json = tok
        .to_string(true)
        .map_err(|e| FixtureError::Tokenizer(e.to_string()))?;
    let p = dir.join("tokenizer.json");
    std::fs::write(&p, tok_json).map_err(io(&p))?;

    let tok_config = serde_json::json!({
        "bos_token": SPECIAL_TOKENS[1],
        "eos_token": SPECIAL_TOKENS[2],
        "pad_token": SPECIAL_TOKENS[0],
        "unk_token": SPECIAL_TOKENS[0],
        "model_max_length": 4096,
        "chat_template": TINY_CHAT_TEMPLATE,
    });
    let p = dir.join("tokenizer_config.json");
    std::fs::write(&p, serde_json::to_string_pretty(&tok_config).expect("json")).map_err(io(&p))?;

    let head_dim = spec.hidden_size / spec.num_attention_heads;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "vocab_size": vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "head_dim": head_dim,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    });
    let p = dir.join("config.json");
    std::fs::write(&p, serde_json::to_string_pretty(&config).expect("json")).map_err(io(&p))?;

    let weights = tiny_weights(seed, spec, vocab_size);
    let views: Vec<(String, TensorView)> = weights
        .iter()
        .map(|(name, (shape, bytes))| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| FixtureError::Safetensors(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| FixtureError::Safetensors(e.to_string()))?;
    let p = dir.join("model.safetensors");
    std::fs::write(&p, bytes).map_err(io(&p))?;
    Ok(())
}

/// Tensor name -> (shape, little-endian f32 bytes), drawn in a fixed order from a seeded RNG.
fn tiny_weights(
    seed: u64,
    spec: &TinySpec,
    vocab: usize,
) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let h = spec.hidden_size;
    let i = spec.intermediate_size;
    let hd = h / spec.num_attention_heads;
    let kv = spec.num_key_value_heads * hd;
    let a = spec.init_scale * 3f32.sqrt();
    let mut out = BTreeMap::new();
    let mut random = |name: String, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let bytes: Vec<u8> = (0..n)
            .flat_map(|_| rng.gen_range(-a..a).to_le_bytes())
            .collect();
        (name, (shape, bytes))
    };
    let ones = |name: String| (name, (vec![h], 1f32.to_le_bytes().repeat(h)));

    let mut entries = vec![random("model.embed_tokens.weight".into(), vec![vocab, h])];
    for l in 0..spec.num_hidden_layers {
        let p = format!("model.layers.{l}");
        entries.push(random(format!("{p}.self_attn.q_proj.weight"), vec![h, h]));
        entries.push(random(format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        entries.push(random(format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        entries.push(random(format!("{p}.self_attn.o_proj.weight"), vec![h, h]));
        entries.push(random(format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
        entries.push(random(format!("{p}.mlp.up_proj.weight"), vec![i, h]));
        entries.push(random(format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        entries.push(ones(format!("{p}.input_layernorm.weight")));
        entries.push(ones(format!("{p}.post_attention_layernorm.weight")));
    }
    entries.push(ones("model.norm.weight".into()));
    if !spec.tie_word_embeddings {
        entries.push(random("lm_head.weight".into(), vec![vocab, h]));
    }
    out.extend(entries);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_weights() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
        write_tiny_model(&a, 7).unwrap();
        write_tiny_model(&b, 7).unwrap();
        write_tiny_model(&c, 8).unwrap();
        let (fa, fb, fc) = (read_all(&a), read_all(&b), read_all(&c));
        assert_eq!(fa.len(), 4);
        assert_eq!(fa, fb);
        let w = |f: &[(String, Vec<u8>)]| f.iter().find(|x| x.0 == "model.safetensors").unwrap().1.clone();
        assert_ne!(w(&fa), w(&fc));
    }

    #[test]
    fn tokenizer_round_trips_and_merges() {
        let t = tempfile::tempdir().unwrap();
        write_tiny_model(t.path(), 1).unwrap();
        let tok = tokenizers::Tokenizer::from_file(t.path().join("tokenizer.json")).unwrap();
        let text = "<|im_start|>user\nthe Score: 42 ünïcödé<|im_end|>\n";
        let enc = tok.encode(text, false).unwrap();
        let ids = enc.get_ids();
        assert_eq!(ids[0], 1, "<|im_start|> is one special token");
        assert!(ids.contains(&2), "<|im_end|> is one special token");
        // Digits are split one by one, and merges apply ("Score" is one token).
        let score = tok.token_to_id("Score").unwrap();
        assert!(ids.contains(&score));
        assert!(ids.contains(&tok.token_to_id("4").unwrap()));
        assert!(ids.contains(&tok.token_to_id("2").unwrap()));
        assert_eq!(tok.decode(ids, false).unwrap(), text);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(t.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(config["vocab_size"].as_u64().unwrap() as usize, tok.get_vocab_size(true));
    }

    #[test]
    fn weights_have_hf_names_and_shapes() {
        let t = tempfile::tempdir().unwrap();
        let spec = TinySpec {
            tie_word_embeddings: false,
            ..TinySpec::default()
        };
        write_tiny_model_with(t.path(), 3, &spec).unwrap();
        let bytes = std::fs::read(t.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let names = st.names();
        assert_eq!(names.len(), 1 + 9 * spec.num_hidden_layers + 1 + 1);
        let k = st.tensor("model.layers.1.self_attn.k_proj.weight").unwrap();
        assert_eq!(k.shape(), &[32, 64]);
        assert!(st.tensor("lm_head.weight").is_ok());
    }
}
