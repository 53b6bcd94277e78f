//! engine::judge
