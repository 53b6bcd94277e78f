//! engine::checkpoint
