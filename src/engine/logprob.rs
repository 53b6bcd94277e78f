//! engine::logprob
