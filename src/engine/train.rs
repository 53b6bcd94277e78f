//! Training: SFT (next-token loss on response tokens only) and DPO (sigmoid loss against a
//! frozen reference whose log-probs are computed once per dataset), full or LoRA, with AdamW,
//! linear warm-up then linear decay, gradient accumulation and a seeded shuffle. Same data,
//! seed and thread count give byte-identical weights. Training runs on
//! [`super::dense::Dense`] (hand-written backward pass); only LoRA on the lm-head goes
//! through candle's autograd over [`Llama`].
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::checkpoint::{self, Loaded};
use super::config::ModelConfig;
use super::dense::{Dense, DenseError};
use super::learner::{run_loop, GraphLearner};
use super::llama::{Llama, Trainable};
use super::logprob::{sum_f64, Encoded, Encoder};
use super::lora::{LoraConfig, LoraInit};
use super::weights::Weights;

pub use super::adamw::AdamW;
pub use super::learner::{dpo_loss, lr_at, sft_loss, DenseLearner, ExampleOut, Learner, Objective};
pub use super::train_params::{
    DpoParams, SftParams, StepReport, TrainError, TrainMetrics, TrainParams,
};

/// The trained model: what a checkpoint is written from.
pub struct Trained {
    model: TrainedModel,
    pub lora: Option<LoraConfig>,
}

/// Training runs on a [`Dense`] model; LoRA on the lm-head on a [`Llama`] (candle's autograd).
enum TrainedModel {
    Dense(Dense),
    Graph(Llama),
}

impl Trained {
    /// Full weights (adapters merged).
    pub fn merged(&self) -> candle_core::Result<Weights> {
        match &self.model {
            TrainedModel::Dense(d) => d.weights(),
            TrainedModel::Graph(m) => m.merged_weights(),
        }
    }

    pub fn cfg(&self) -> &ModelConfig {
        match &self.model {
            TrainedModel::Dense(d) => &d.cfg,
            TrainedModel::Graph(m) => &m.cfg,
        }
    }

    /// The trained LoRA matrices (empty after full fine-tuning).
    pub fn adapter(&self) -> candle_core::Result<Weights> {
        match &self.model {
            TrainedModel::Dense(d) => d.adapter(),
            TrainedModel::Graph(m) => Ok(m.lora_weights()),
        }
    }

    /// Write the checkpoint folder `dir`: full weights, or (LoRA) the adapter plus a
    /// reference to `base_path`, the model training started from (`base`, as loaded).
    pub fn save(
        &self,
        dir: &std::path::Path,
        base: &Loaded,
        base_path: &std::path::Path,
    ) -> Result<(), TrainError> {
        let tokenizer = &base.tokenizer;
        let template = Some(&base.chat);
        match &self.lora {
            Some(lora) => {
                let adapter = self.adapter()?;
                let contents = checkpoint::Contents::Lora {
                    adapter: &adapter,
                    lora,
                    base: base_path,
                };
                checkpoint::save(dir, self.cfg(), contents, tokenizer, template)?
            }
            None => {
                let w = self.merged()?;
                checkpoint::save(
                    dir,
                    self.cfg(),
                    checkpoint::Contents::Full(&w),
                    tokenizer,
                    template,
                )?
            }
        }
        Ok(())
    }
}

/// One prompt/response example.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftRow {
    pub prompt: String,
    pub response: String,
}

/// One preference pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpoRow {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

/// Load a model for training or scoring (f32 weights) with the encoder its chat template
/// implies (plain ChatML when it carries none).
pub fn load_for_training(path: &std::path::Path) -> Result<(Loaded, Encoder), TrainError> {
    let loaded = checkpoint::load(path)?;
    let enc = Encoder {
        tokenizer: loaded.tokenizer.clone(),
        template: loaded.chat.clone(),
    };
    Ok((loaded, enc))
}

fn encode_row(
    enc: &Encoder,
    row: usize,
    p: &str,
    r: &str,
    max: usize,
) -> Result<Encoded, TrainError> {
    let mut ex = enc
        .encode(p, r)
        .map_err(|source| TrainError::Row { row, source })?;
    truncate(&mut ex, max);
    Ok(ex)
}

/// Cut to `max` tokens, cutting the prompt's start if the response alone would not fit.
fn truncate(ex: &mut Encoded, max: usize) {
    if ex.ids.len() <= max {
        return;
    }
    if ex.start + 1 > max {
        let drop = ex.start + 1 - max;
        ex.ids.drain(..drop.min(ex.start - 1));
        ex.start -= drop.min(ex.start - 1);
    }
    ex.ids.truncate(max.max(ex.start + 1));
}

/// The candle model LoRA trains (full fine-tuning uses [`Dense`]).
fn build_lora(
    cfg: &ModelConfig,
    w: &Weights,
    lc: &LoraConfig,
    p: &TrainParams,
) -> candle_core::Result<Llama> {
    Llama::new(
        cfg,
        w,
        &Trainable::Lora(lc.clone(), LoraInit { seed: p.seed }),
    )
}

fn check(p: &TrainParams) -> Result<(), TrainError> {
    if p.grad_accum == 0 || p.epochs == 0 {
        return Err(TrainError::Param(
            "grad_accum and epochs must be at least 1".into(),
        ));
    }
    if !(p.lr.is_finite() && p.lr >= 0.0) {
        return Err(TrainError::Param(format!(
            "lr {} is not a non-negative number",
            p.lr
        )));
    }
    if p.max_tokens < 2 {
        return Err(TrainError::Param("max_tokens must be at least 2".into()));
    }
    if let Some(l) = &p.lora {
        if l.rank == 0 || l.targets.is_empty() {
            return Err(TrainError::Param(
                "LoRA needs rank >= 1 and at least one target".into(),
            ));
        }
    }
    Ok(())
}

/// SFT from text rows: encode with the chat template, then [`sft_encoded`].
pub fn sft(
    cfg: &ModelConfig,
    weights: Weights,
    enc: &Encoder,
    rows: &[SftRow],
    params: &SftParams,
    progress: &mut dyn FnMut(&StepReport),
) -> Result<(Trained, TrainMetrics), TrainError> {
    let max = params.train.max_tokens;
    let data = rows
        .iter()
        .enumerate()
        .map(|(i, r)| encode_row(enc, i, &r.prompt, &r.response, max))
        .collect::<Result<Vec<_>, _>>()?;
    sft_encoded(cfg, weights, &data, params, progress)
}

/// SFT on tokenized examples. The starting `weights` are taken (and freed as the trained
/// model is built, unless the caller keeps a clone), so they are not held twice.
pub fn sft_encoded(
    cfg: &ModelConfig,
    weights: Weights,
    data: &[Encoded],
    params: &SftParams,
    progress: &mut dyn FnMut(&StepReport),
) -> Result<(Trained, TrainMetrics), TrainError> {
    let p = &params.train;
    check(p)?;
    if data.is_empty() {
        return Err(TrainError::Empty);
    }
    let tokens = data.iter().map(|e| e.ids.len()).sum::<usize>() * p.epochs;
    let objective = |i: usize| Objective::Sft(&data[i]);
    let (trained, metrics) = fit(cfg, weights, p, data.len(), objective, progress)?;
    let metrics = TrainMetrics {
        tokens,
        reference_seconds: None,
        ..metrics
    };
    Ok((trained, metrics))
}

/// DPO from text rows. `reference` defaults to the policy's starting weights (`cfg`, `weights`);
/// one given is freed once its log-probs are computed, before training starts.
#[allow(clippy::too_many_arguments)]
pub fn dpo(
    cfg: &ModelConfig,
    weights: Weights,
    reference: Option<(&ModelConfig, Weights)>,
    enc: &Encoder,
    rows: &[DpoRow],
    params: &DpoParams,
    progress: &mut dyn FnMut(&StepReport),
) -> Result<(Trained, TrainMetrics), TrainError> {
    let max = params.train.max_tokens;
    let pairs = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok((
                encode_row(enc, i, &r.prompt, &r.chosen, max)?,
                encode_row(enc, i, &r.prompt, &r.rejected, max)?,
            ))
        })
        .collect::<Result<Vec<_>, TrainError>>()?;
    let t0 = Instant::now();
    let ref_logps = match reference {
        Some((rc, rw)) => reference_logprobs(rc, &rw, &pairs)?,
        None => reference_logprobs(cfg, &weights, &pairs)?,
    };
    let ref_secs = t0.elapsed().as_secs_f64();
    let (trained, m) = dpo_encoded(cfg, weights, &pairs, &ref_logps, params, progress)?;
    Ok((
        trained,
        TrainMetrics {
            reference_seconds: Some(ref_secs),
            ..m
        },
    ))
}

/// Summed response log-probs of every (chosen, rejected) pair under a frozen model: computed
/// once per dataset and reused by every epoch.
pub fn reference_logprobs(
    cfg: &ModelConfig,
    weights: &Weights,
    pairs: &[(Encoded, Encoded)],
) -> Result<Vec<(f64, f64)>, TrainError> {
    let model = Dense::new(cfg, weights, None)?;
    pairs
        .iter()
        .enumerate()
        .map(|(row, (c, r))| {
            let (lp, _) = model.forward(&[c, r], false).map_err(|e| match e {
                DenseError::Sequence { source, .. } => TrainError::Row { row, source },
                e => e.into(),
            })?;
            Ok((sum_f64(&lp[0]), sum_f64(&lp[1])))
        })
        .collect()
}

/// DPO on tokenized pairs with precomputed reference log-probs, from `weights` (taken, as
/// [`sft_encoded`] takes them).
pub fn dpo_encoded(
    cfg: &ModelConfig,
    weights: Weights,
    pairs: &[(Encoded, Encoded)],
    ref_logps: &[(f64, f64)],
    params: &DpoParams,
    progress: &mut dyn FnMut(&StepReport),
) -> Result<(Trained, TrainMetrics), TrainError> {
    let p = &params.train;
    check(p)?;
    if pairs.is_empty() {
        return Err(TrainError::Empty);
    }
    if ref_logps.len() != pairs.len() {
        return Err(TrainError::Param(
            "one reference log-prob pair per training pair".into(),
        ));
    }
    if !(params.beta > 0.0 && params.beta.is_finite()) {
        return Err(TrainError::Param(format!(
            "beta {} must be positive",
            params.beta
        )));
    }
    let tokens = pairs
        .iter()
        .map(|(c, r)| c.ids.len() + r.ids.len())
        .sum::<usize>()
        * p.epochs;
    let beta = params.beta;
    let objective = |i: usize| Objective::Dpo {
        chosen: &pairs[i].0,
        rejected: &pairs[i].1,
        reference: ref_logps[i],
        beta,
    };
    let (trained, metrics) = fit(cfg, weights, p, pairs.len(), objective, progress)?;
    Ok((trained, TrainMetrics { tokens, ..metrics }))
}

/// Train on `n` examples, `objective(i)` being example `i`: full fine-tuning on a [`Dense`]
/// model (every example checked first, naming the bad row), LoRA on the lm-head through
/// candle's autograd.
fn fit<'a>(
    cfg: &ModelConfig,
    weights: Weights,
    p: &TrainParams,
    n: usize,
    objective: impl Fn(usize) -> Objective<'a>,
    progress: &mut dyn FnMut(&StepReport),
) -> Result<(Trained, TrainMetrics), TrainError> {
    let lora = p.lora.as_ref().map(|lc| (lc, LoraInit { seed: p.seed }));
    let (model, metrics) = match lora {
        // LoRA on the lm-head needs candle's autograd; everything else trains on `Dense`.
        Some((lc, _)) if !Dense::supports(lc) => {
            let model = build_lora(cfg, &weights, lc, p)?;
            drop(weights);
            let mut learner = GraphLearner::new(&model, p, objective);
            let m = run_loop(&mut learner, n, p, progress)?;
            (TrainedModel::Graph(model), m)
        }
        _ => {
            let model = Dense::from_weights(cfg, weights, lora)?;
            for row in 0..n {
                for ex in objective(row).seqs() {
                    model
                        .check(ex)
                        .map_err(|source| TrainError::Row { row, source })?;
                }
            }
            let mut learner = DenseLearner::new(model, p, objective);
            let m = run_loop(&mut learner, n, p, progress)?;
            (TrainedModel::Dense(learner.into_model()), m)
        }
    };
    let trained = Trained {
        model,
        lora: p.lora.clone(),
    };
    Ok((trained, metrics))
}

#[cfg(test)]
#[path = "train_tests.rs"]
mod tests;
