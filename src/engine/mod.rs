//! The model engine on candle: loading (GGUF, Hugging Face Llama / Mistral / Qwen2 folders,
//! srlm checkpoints),
//! tokenizer, chat template, generation, judging, and training (SFT, DPO, LoRA) on CPU,
//! deterministically. Knows nothing of the store or the stages.

// Inference side.
pub mod batch;
pub mod chat;
pub mod fixture;
pub mod forward;
pub mod generate;
pub mod gguf;
pub mod judge;
pub mod kernels;
pub mod kv_cache;
pub mod loader;
pub mod model;
pub mod tokenizer;

// Training side.
pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod dense;
mod dense_attention;
mod dense_head;
mod dense_ops;
pub mod export;
pub mod grad_ops;
mod learner;
pub mod llama;
pub mod logprob;
pub mod lora;
pub mod train;
mod train_params;
pub mod weights;

#[cfg(test)]
mod families;
