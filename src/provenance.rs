//! Provenance: the user's code version (git2), environment, run records.
