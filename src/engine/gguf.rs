//! engine::gguf
