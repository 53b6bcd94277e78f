//! engine::tokenizer
