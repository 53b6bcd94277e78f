//! engine::weights
