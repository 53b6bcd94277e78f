//! srlm-store
