//! Tokenizers for srlm's models: a byte-level BPE built from a vocabulary and merges (what a
//! GGUF carries, and what the test fixture writes), or a Hugging Face `tokenizer.json`.
//!
//! SmolLM2's tokenizer is byte-level BPE whose pre-tokenizer splits digits one by one before the
//! GPT-2 byte-level split, with no prefix space; candle's own GGUF helper gets both wrong, so we
//! build it here with the `tokenizers` crate.
use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

/// Errors building, loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("building the byte-level BPE tokenizer: {0}")]
    Build(String),
    #[error("reading tokenizer {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("encoding text: {0}")]
    Encode(String),
    #[error("decoding token ids: {0}")]
    Decode(String),
    #[error("special token {token:?} is not in the vocabulary")]
    MissingSpecial { token: String },
}

/// The pieces of a byte-level BPE tokenizer, as a GGUF stores them.
#[derive(Debug, Clone)]
pub struct BpeSpec {
    /// Token strings, indexed by id (byte-level alphabet, e.g. `Ġ` for a space).
    pub tokens: Vec<String>,
    /// Merge rules in rank order.
    pub merges: Vec<(String, String)>,
    /// Ids of the tokens that are special (never split, skipped when decoding).
    pub special_ids: Vec<u32>,
}

/// Build SmolLM2's style of tokenizer: byte-level BPE, `Digits(individual)` then
/// `ByteLevel(no prefix space)` pre-tokenizer, byte-level decoder, special tokens added.
pub fn build_byte_level_bpe(spec: &BpeSpec) -> Result<Tokenizer, TokenizerError> {
    // The BPE builder wants the tokenizers crate's own hash-map type; going through its serde
    // form (what a tokenizer.json holds) avoids depending on that crate's hasher.
    let vocab: serde_json::Map<String, serde_json::Value> = spec
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i as u32)))
        .collect();
    let model = serde_json::json!({ "vocab": vocab, "merges": spec.merges });
    let bpe: BPE =
        serde_json::from_value(model).map_err(|e| TokenizerError::Build(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let pre = Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(byte_level),
    ]);
    tok.with_pre_tokenizer(Some(pre));
    tok.with_decoder(Some(ByteLevelDecoder::default().add_prefix_space(false)));
    let specials: Vec<AddedToken> = spec
        .special_ids
        .iter()
        .map(|&id| {
            let t = spec.tokens.get(id as usize).ok_or_else(|| {
                TokenizerError::Build(format!("special token id {id} is out of the vocabulary"))
            })?;
            Ok(AddedToken::from(t.clone(), true))
        })
        .collect::<Result<_, TokenizerError>>()?;
    tok.add_special_tokens(specials)
        .map_err(|e| TokenizerError::Build(e.to_string()))?;
    Ok(tok)
}

/// Load a Hugging Face `tokenizer.json`.
pub fn load_tokenizer_json(path: &Path) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Encode text to ids, without adding any special tokens (the chat template spells them out).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    let enc = tok
        .encode_fast(text, false)
        .map_err(|e| TokenizerError::Encode(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

/// Decode ids to text, dropping special tokens.
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String, TokenizerError> {
    tok.decode(ids, true)
        .map_err(|e| TokenizerError::Decode(e.to_string()))
}

/// The id of a token that must exist (e.g. `<|im_end|>`).
pub fn token_id(tok: &Tokenizer, token: &str) -> Result<u32, TokenizerError> {
    tok.token_to_id(token)
        .ok_or_else(|| TokenizerError::MissingSpecial {
            token: token.to_string(),
        })
}
