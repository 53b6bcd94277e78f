//! engine::llama
