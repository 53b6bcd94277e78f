//! engine::chat
