//! engine::generate
