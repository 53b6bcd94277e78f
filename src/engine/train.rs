//! engine::train
