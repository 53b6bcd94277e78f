//! engine::fixture
