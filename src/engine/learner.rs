//! The optimisation loop shared by SFT and DPO: a seeded shuffle per epoch, gradient
//! accumulation, AdamW with linear warm-up/decay, over a [`Learner`] that computes examples'
//! gradients: on a [`Dense`] model (hand-written backward pass) or, for LoRA on the lm-head,
//! through candle's autograd over [`Llama`].
use std::time::Instant;

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::adamw::AdamW;
use super::dense::Dense;
use super::llama::Llama;
use super::logprob::{batch_response_logprobs, sum_f64, token_logprobs, Encoded};
use super::train_params::{StepReport, TrainError, TrainMetrics, TrainParams};

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
    /// Bytes of activations the forward pass kept for the backward pass (0 when candle's
    /// autograd graph keeps them).
    pub tape_bytes: usize,
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
pub(super) struct GraphLearner<'m, F> {
    model: &'m Llama,
    opt: AdamW,
    objective: F,
}

impl<'m, F> GraphLearner<'m, F> {
    pub(super) fn new(model: &'m Llama, p: &TrainParams, objective: F) -> Self {
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
            tape_bytes: 0,
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
        let tape_bytes = tape.bytes();
        let t1 = Instant::now();
        self.model.backward(tape, &dlp, self.opt.grads_mut());
        Ok(ExampleOut {
            loss,
            margin,
            forward_seconds: (t1 - t0).as_secs_f64(),
            backward_seconds: t1.elapsed().as_secs_f64(),
            tape_bytes,
        })
    }

    fn step(&mut self, lr: f64) -> Result<(), TrainError> {
        self.opt.step_dense(lr, self.model.params_mut());
        Ok(())
    }
}

/// The shared optimisation loop: seeded shuffle per epoch, `grad_accum` examples per step,
/// AdamW with linear warm-up/decay.
pub(super) fn run_loop(
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
