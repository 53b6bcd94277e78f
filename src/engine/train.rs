//! Training: SFT (next-token loss on response tokens only) and DPO (sigmoid loss against a
//! frozen reference whose log-probs are computed once per dataset), full or LoRA, with AdamW,
//! linear warm-up then linear decay, gradient accumulation and a seeded shuffle. Same data,
//! seed and thread count give byte-identical weights. Training runs on
//! [`super::dense::Dense`] (hand-written backward pass); only LoRA on the lm-head goes
//! through candle's autograd over [`Llama`].
use std::time::Instant;

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, CheckpointError, Loaded};
use super::config::ModelConfig;
use super::dense::{Dense, DenseError};
use super::llama::{Llama, Trainable};
use super::logprob::{
    batch_response_logprobs, sum_f64, token_logprobs, Encoded, Encoder, LogprobError,
};
use super::lora::{LoraConfig, LoraInit};
use super::weights::Weights;

pub use super::adamw::AdamW;

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
    weights: &Weights,
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

/// SFT loss of one example: mean negative log-likelihood of `labels[start..]` (the response)
/// given `ids`; `labels` at prompt positions are ignored. Normally `labels == ids`.
pub fn sft_loss(
    model: &Llama,
    ids: &[u32],
    labels: &[u32],
    start: usize,
) -> Result<Tensor, TrainError> {
    let lp = token_logprobs(model, ids, start, &labels[start..])?;
    Ok(lp.mean_all()?.neg()?)
}

/// SFT on tokenized examples.
pub fn sft_encoded(
    cfg: &ModelConfig,
    weights: &Weights,
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

/// DPO from text rows. `reference` defaults to the policy's starting weights (`cfg`, `weights`).
#[allow(clippy::too_many_arguments)]
pub fn dpo(
    cfg: &ModelConfig,
    weights: &Weights,
    reference: Option<(&ModelConfig, &Weights)>,
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
    let (rc, rw) = reference.unwrap_or((cfg, weights));
    let t0 = Instant::now();
    let ref_logps = reference_logprobs(rc, rw, &pairs)?;
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

/// DPO on tokenized pairs with precomputed reference log-probs.
pub fn dpo_encoded(
    cfg: &ModelConfig,
    weights: &Weights,
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
    weights: &Weights,
    p: &TrainParams,
    n: usize,
    objective: impl Fn(usize) -> Objective<'a>,
    progress: &mut dyn FnMut(&StepReport),
) -> Result<(Trained, TrainMetrics), TrainError> {
    let lora = p.lora.as_ref().map(|lc| (lc, LoraInit { seed: p.seed }));
    let (model, metrics) = match lora {
        // LoRA on the lm-head needs candle's autograd; everything else trains on `Dense`.
        Some((lc, _)) if !Dense::supports(lc) => {
            let model = build_lora(cfg, weights, lc, p)?;
            let mut learner = GraphLearner::new(&model, p, objective);
            let m = run_loop(&mut learner, n, p, progress)?;
            (TrainedModel::Graph(model), m)
        }
        _ => {
            let model = Dense::new(cfg, weights, lora)?;
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

/// DPO's sigmoid loss for one pair, −log σ(β[(π_w − ref_w) − (π_l − ref_l)]), and the
/// reward margin β[...] (positive: the policy prefers the chosen response more than the
/// reference does).
pub fn dpo_loss(
    model: &Llama,
    chosen: &Encoded,
    rejected: &Encoded,
    reference: (f64, f64),
    beta: f64,
) -> Result<(Tensor, f64), TrainError> {
    // One padded batch of two: each weight matrix gets one larger matmul per pass.
    let lp = batch_response_logprobs(model, &[chosen, rejected])?;
    let (pc, pr) = (lp[0].sum_all()?, lp[1].sum_all()?);
    let logits = ((pc - pr)? - (reference.0 - reference.1))?;
    let z = (logits * beta)?;
    let margin = z.to_scalar::<f32>()? as f64;
    // −log σ(z) = softplus(−z) = log(1 + e^{−z}); computed stably as relu(−z) + log(1 + e^{−|z|}).
    let neg = z.neg()?;
    let loss = (neg.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    Ok((loss, margin))
}

/// What [`Learner::example`] reports.
#[derive(Debug, Clone, Copy)]
pub struct ExampleOut {
    pub loss: f64,
    /// DPO's reward margin β[(π−ref)(y_w) − (π−ref)(y_l)].
    pub margin: Option<f64>,
    pub forward_seconds: f64,
    pub backward_seconds: f64,
}

/// One way of computing examples' gradients and applying optimizer steps.
pub trait Learner {
    /// Loss (and DPO margin) of example `i`; its gradient divided by `div` joins the sum
    /// the next [`Learner::step`] applies.
    fn example(&mut self, i: usize, div: usize) -> Result<ExampleOut, TrainError>;
    /// One AdamW step with the summed gradients, which it then clears.
    fn step(&mut self, lr: f64) -> Result<(), TrainError>;
}

/// Training through candle's autograd (LoRA on the lm-head): `objective(i)` says what
/// example `i` is.
struct GraphLearner<'m, F> {
    model: &'m Llama,
    opt: AdamW,
    objective: F,
}

impl<'m, F> GraphLearner<'m, F> {
    fn new(model: &'m Llama, p: &TrainParams, objective: F) -> Self {
        Self {
            model,
            opt: AdamW::new(&model.params, p),
            objective,
        }
    }
}

impl<'a, F: Fn(usize) -> Objective<'a>> Learner for GraphLearner<'_, F> {
    fn example(&mut self, i: usize, div: usize) -> Result<ExampleOut, TrainError> {
        let t0 = Instant::now();
        let (loss, margin) = match (self.objective)(i) {
            Objective::Sft(ex) => (sft_loss(self.model, &ex.ids, &ex.ids, ex.start)?, None),
            Objective::Dpo {
                chosen,
                rejected,
                reference,
                beta,
            } => {
                let (loss, m) = dpo_loss(self.model, chosen, rejected, reference, beta)?;
                (loss, Some(m))
            }
        };
        let value = loss.to_scalar::<f32>()? as f64;
        let t1 = Instant::now();
        let grads = (loss / div as f64)?.backward()?;
        self.opt.accumulate(&grads)?;
        Ok(ExampleOut {
            loss: value,
            margin,
            forward_seconds: (t1 - t0).as_secs_f64(),
            backward_seconds: t1.elapsed().as_secs_f64(),
        })
    }

    fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        Ok(self.opt.step(lr)?)
    }
}

/// What one example asks of the dense model.
pub enum Objective<'a> {
    /// SFT: the mean negative log-likelihood of the response tokens.
    Sft(&'a Encoded),
    /// DPO's sigmoid loss against the pair's cached reference log-probs.
    Dpo {
        chosen: &'a Encoded,
        rejected: &'a Encoded,
        reference: (f64, f64),
        beta: f64,
    },
}

impl Objective<'_> {
    /// The sequences one forward pass scores.
    pub fn seqs(&self) -> Vec<&Encoded> {
        match self {
            Objective::Sft(e) => vec![e],
            Objective::Dpo {
                chosen, rejected, ..
            } => vec![chosen, rejected],
        }
    }

    /// From the response log-probs of [`Objective::seqs`]: the loss, the DPO reward margin,
    /// and the loss's derivative by each log-prob, divided by `div`.
    pub fn loss(&self, lp: &[Vec<f32>], div: usize) -> (f64, Option<f64>, Vec<Vec<f32>>) {
        let k = 1.0 / div as f64;
        match self {
            Objective::Sft(_) => {
                let n = lp[0].len() as f64;
                let d = (-k / n) as f32;
                (-sum_f64(&lp[0]) / n, None, vec![vec![d; lp[0].len()]])
            }
            Objective::Dpo {
                reference, beta, ..
            } => {
                let (pc, pr) = (sum_f64(&lp[0]), sum_f64(&lp[1]));
                let z = beta * ((pc - pr) - (reference.0 - reference.1));
                // −log σ(z) = softplus(−z), computed stably; its derivative is −σ(−z).
                let loss = (-z).max(0.0) + (-z.abs()).exp().ln_1p();
                let dz = -1.0 / (1.0 + z.exp());
                let dc = (k * beta * dz) as f32;
                let grads = vec![vec![dc; lp[0].len()], vec![-dc; lp[1].len()]];
                (loss, Some(z), grads)
            }
        }
    }
}

/// Training (full or LoRA) on a [`Dense`] model: `objective(i)` says what example `i` is.
pub struct DenseLearner<F> {
    model: Dense,
    opt: AdamW,
    objective: F,
}

impl<F> DenseLearner<F> {
    pub fn new(model: Dense, p: &TrainParams, objective: F) -> Self {
        Self {
            opt: AdamW::for_dense(&model, p),
            model,
            objective,
        }
    }

    pub fn into_model(self) -> Dense {
        self.model
    }
}

impl<'a, F: Fn(usize) -> Objective<'a>> Learner for DenseLearner<F> {
    fn example(&mut self, i: usize, div: usize) -> Result<ExampleOut, TrainError> {
        let t0 = Instant::now();
        let obj = (self.objective)(i);
        let (lp, tape) = self.model.forward(&obj.seqs(), true)?;
        let (loss, margin, dlp) = obj.loss(&lp, div);
        let tape = tape.expect("forward keeps the tape when asked");
        let t1 = Instant::now();
        self.model.backward(tape, &dlp, self.opt.grads_mut());
        Ok(ExampleOut {
            loss,
            margin,
            forward_seconds: (t1 - t0).as_secs_f64(),
            backward_seconds: t1.elapsed().as_secs_f64(),
        })
    }

    fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        self.opt.step_dense(lr, self.model.params_mut());
        Ok(())
    }
}

/// The shared optimisation loop: seeded shuffle per epoch, `grad_accum` examples per step,
/// AdamW with linear warm-up/decay.
fn run_loop(
    learner: &mut dyn Learner,
    n: usize,
    p: &TrainParams,
    progress: &mut dyn FnMut(&StepReport),
) -> Result<TrainMetrics, TrainError> {
    let start = Instant::now();
    let steps_per_epoch = n.div_ceil(p.grad_accum);
    let total = steps_per_epoch * p.epochs;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let (mut step, mut seen) = (0usize, 0usize);
    let (mut first, mut last, mut loss_sum) = (None, 0.0, 0.0);
    let (mut acc_sum, mut margin_sum, mut margin_n) = (0.0, 0.0, 0usize);
    for _ in 0..p.epochs {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        for chunk in order.chunks(p.grad_accum) {
            let t0 = Instant::now();
            step += 1;
            let (mut l_sum, mut m_sum, mut m_pos, mut m_n) = (0.0, 0.0, 0usize, 0usize);
            for &i in chunk {
                let out = learner.example(i, chunk.len())?;
                l_sum += out.loss;
                if let Some(m) = out.margin {
                    m_sum += m;
                    m_n += 1;
                    m_pos += usize::from(m > 0.0);
                }
            }
            let lr = lr_at(p, step, total);
            learner.step(lr)?;
            seen += chunk.len();
            let loss = l_sum / chunk.len() as f64;
            first.get_or_insert(loss);
            last = loss;
            loss_sum += loss;
            let (margin, accuracy) = if m_n > 0 {
                margin_sum += m_sum;
                acc_sum += m_pos as f64;
                margin_n += m_n;
                (Some(m_sum / m_n as f64), Some(m_pos as f64 / m_n as f64))
            } else {
                (None, None)
            };
            progress(&StepReport {
                step,
                total_steps: total,
                examples: seen,
                lr,
                loss,
                reward_margin: margin,
                reward_accuracy: accuracy,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
    }
    Ok(TrainMetrics {
        steps: step,
        examples: seen,
        tokens: 0,
        first_loss: first.unwrap_or(0.0),
        final_loss: last,
        mean_loss: loss_sum / step.max(1) as f64,
        reward_accuracy: (margin_n > 0).then(|| acc_sum / margin_n as f64),
        reward_margin: (margin_n > 0).then(|| margin_sum / margin_n as f64),
        seconds: start.elapsed().as_secs_f64(),
        reference_seconds: None,
    })
}

/// Learning rate of optimizer step `step` (1-based) of `total`: linear warm-up over
/// `warmup_steps`, then linear decay that reaches lr/(decay steps) at the last step (never 0,
/// so no step is wasted).
pub fn lr_at(p: &TrainParams, step: usize, total: usize) -> f64 {
    let w = p.warmup_steps.min(total);
    if step <= w {
        p.lr * step as f64 / w as f64
    } else {
        p.lr * (total - step + 1) as f64 / (total - w) as f64
    }
}

#[cfg(test)]
#[path = "train_tests.rs"]
mod tests;
