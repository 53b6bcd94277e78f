//! The shared vocabulary of training: SFT/DPO parameters (as the run record stores them),
//! per-step reports, run metrics and errors. Its own module so `train` (the entry points)
//! and `learner` (the optimisation loop) both use it without importing each other.
use serde::{Deserialize, Serialize};

use super::checkpoint::CheckpointError;
use super::dense::DenseError;
use super::logprob::LogprobError;
use super::lora::LoraConfig;

/// Errors while training; data errors name the row.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("row {row}: {source}")]
    Row { row: usize, source: LogprobError },
    #[error("no training examples")]
    Empty,
    #[error("invalid parameter: {0}")]
    Param(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Logprob(#[from] LogprobError),
    /// Boxed: a checkpoint error carries paths and would make every `Result` here large.
    #[error(transparent)]
    Checkpoint(Box<CheckpointError>),
    #[error(transparent)]
    Dense(#[from] DenseError),
    #[error(transparent)]
    Gguf(#[from] super::gguf::GgufError),
    #[error("{path}: {source}")]
    Template {
        path: std::path::PathBuf,
        source: super::chat::ChatError,
    },
}

impl From<CheckpointError> for TrainError {
    fn from(e: CheckpointError) -> Self {
        Self::Checkpoint(Box::new(e))
    }
}

/// Optimisation parameters shared by SFT and DPO (serde: the run record stores them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainParams {
    /// Peak learning rate.
    pub lr: f64,
    /// Optimizer steps of linear warm-up from 0 to `lr`; linear decay towards 0 after.
    pub warmup_steps: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Examples (SFT) or pairs (DPO) whose gradients are summed per optimizer step.
    pub grad_accum: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Seeds the shuffle and LoRA's initial matrices.
    pub seed: u64,
    /// Longer examples are cut to this many tokens (the response keeps at least one token).
    pub max_tokens: usize,
    /// Train LoRA adapters instead of every weight.
    pub lora: Option<LoraConfig>,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            lr: 1e-5,
            warmup_steps: 0,
            epochs: 1,
            grad_accum: 4,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            seed: 0,
            max_tokens: 1024,
            lora: None,
        }
    }
}

/// SFT parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SftParams {
    #[serde(flatten)]
    pub train: TrainParams,
}

/// DPO parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoParams {
    #[serde(flatten)]
    pub train: TrainParams,
    /// Strength of the KL penalty (the paper's and TRL's default 0.1).
    pub beta: f64,
}

impl Default for DpoParams {
    fn default() -> Self {
        Self {
            train: TrainParams {
                lr: 1e-6,
                ..TrainParams::default()
            },
            beta: 0.1,
        }
    }
}

/// What each optimizer step reports through the progress callback.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    pub total_steps: usize,
    pub examples: usize,
    pub lr: f64,
    /// Mean loss over the step's examples.
    pub loss: f64,
    /// DPO only: mean of β[(π-ref)(y_w) - (π-ref)(y_l)] and the share of pairs where it is > 0.
    pub reward_margin: Option<f64>,
    pub reward_accuracy: Option<f64>,
    pub seconds: f64,
}

/// Summary of a training run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainMetrics {
    pub steps: usize,
    pub examples: usize,
    pub tokens: usize,
    pub first_loss: f64,
    pub final_loss: f64,
    pub mean_loss: f64,
    pub reward_accuracy: Option<f64>,
    pub reward_margin: Option<f64>,
    pub seconds: f64,
    /// Seconds spent computing the reference log-probs (DPO).
    pub reference_seconds: Option<f64>,
}
