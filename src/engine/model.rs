//! engine::model
