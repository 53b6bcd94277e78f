//! engine::config
