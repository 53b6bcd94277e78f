//! engine::lora
