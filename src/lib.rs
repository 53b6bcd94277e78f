//! # srlm — a versioned dataset-and-experiment tracker for self-rewarding language models
//!
//! The self-rewarding loop (Yuan et al., 2024) trains M1 by SFT on IFT + EFT data, then for each
//! iteration t generates prompts, candidate responses and self-judgements with Mt, keeps the best
//! and worst response per prompt as a preference pair (AIFT(Mt)) and trains M(t+1) by DPO.
//!
//! srlm stores every dataset and checkpoint of that loop content-addressed in a local store
//! ([`srlm_store`]), commits them with lineage metadata, runs the stages itself with a candle
//! engine, and reproduces past models byte for byte.
//!
//! Layers (arrows point down only):
//! - [`cli`]: one file per verb; the only code that prints.
//! - [`stages`]: import, sft, gen-prompts, gen-responses, judge, pairs, dpo, eval-judge, run,
//!   iterate, reproduce; provenance is recorded around every stage, not inside each.
//! - [`report`], [`runs`]: the loop's HTML report and runs side by side (read the layers below).
//! - [`lineage`], [`provenance`], [`dataset`]: run records, lineage walks, the user's code
//!   version (git2), dataset kinds, keys, row diff, statistics.
//! - [`backend`]: the generation seam: the in-process engine or an OpenAI-compatible server.
//! - [`engine`]: the model: GGUF / safetensors loading, tokenizer, generation, judging, training.
//! - [`srlm_store`]: objects, chunks, manifests, trees, commits, refs, op log, index.

pub mod backend;
pub mod cli;
pub mod dataset;
pub mod engine;
pub mod hooks;
pub mod lineage;
pub mod provenance;
pub mod report;
pub mod runs;
pub mod stages;
pub mod unit;
