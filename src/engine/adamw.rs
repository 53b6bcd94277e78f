//! AdamW done in place on each parameter's storage (candle `Var`s for LoRA on the lm-head, or a
//! [`super::dense::Dense`] model's plain vectors), element-wise on rayon chunks so the bytes do
//! not depend on the thread count.
use std::collections::BTreeMap;

use candle_core::{CpuStorage, InplaceOp1, Layout, Storage, Var};

use super::dense::Dense;
use super::train_params::TrainParams;

/// AdamW (the same update as `candle_nn::AdamW`) done in place on each parameter's storage:
/// candle `Var`s (LoRA training) or a [`Dense`] model's vectors. candle's version allocates
/// about ten tensors per parameter per step; on a 135M-parameter model that page-faulting
/// cost 3 s a step, and this loop is memory-bound instead.
pub struct AdamW {
    /// The trained `Var`s, in order; empty for a dense model (its vectors come to `step_dense`).
    vars: Vec<Var>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Gradients summed since the last step.
    acc: Vec<Vec<f32>>,
    touched: Vec<bool>,
    t: i32,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(params: &BTreeMap<String, Var>, p: &TrainParams) -> Self {
        let sizes: Vec<usize> = params.values().map(|v| v.elem_count()).collect();
        Self {
            vars: params.values().cloned().collect(),
            ..Self::zeroed(&sizes, p)
        }
    }

    /// For a [`Dense`] model's parameters (see [`AdamW::grads_mut`], [`AdamW::step_dense`]).
    pub fn for_dense(model: &Dense, p: &TrainParams) -> Self {
        Self::zeroed(&model.sizes(), p)
    }

    fn zeroed(sizes: &[usize], p: &TrainParams) -> Self {
        let zeros = || sizes.iter().map(|&n| vec![0f32; n]).collect::<Vec<_>>();
        Self {
            vars: vec![],
            m: zeros(),
            v: zeros(),
            acc: zeros(),
            touched: vec![false; sizes.len()],
            t: 0,
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
        }
    }

    /// Add one backward pass's gradients to the accumulators.
    pub fn accumulate(
        &mut self,
        grads: &candle_core::backprop::GradStore,
    ) -> candle_core::Result<()> {
        for ((var, acc), touched) in self.vars.iter().zip(&mut self.acc).zip(&mut self.touched) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.contiguous()?;
            let (st, l) = g.storage_and_layout();
            let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) =
                (&*st, l.contiguous_offsets())
            else {
                candle_core::bail!("AdamW: f32 CPU gradients only")
            };
            // Element-wise, so the sum is the same at any thread count.
            use rayon::prelude::*;
            acc.par_iter_mut()
                .zip(data[a..b].par_iter())
                .with_min_len(1 << 15)
                .for_each(|(acc, x)| *acc += *x);
            *touched = true;
        }
        Ok(())
    }

    /// The gradient accumulators, for a dense backward pass to add into.
    pub fn grads_mut(&mut self) -> &mut [Vec<f32>] {
        self.touched.fill(true);
        &mut self.acc
    }

    fn next_coeffs(&mut self, lr: f64) -> Coeffs {
        self.t += 1;
        Coeffs {
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            scale_m: (1.0 / (1.0 - self.beta1.powi(self.t))) as f32,
            scale_v: (1.0 / (1.0 - self.beta2.powi(self.t))) as f32,
            decay: (1.0 - lr * self.weight_decay) as f32,
            lr: lr as f32,
            eps: self.eps as f32,
        }
    }

    /// Apply one update to the `Var`s with the accumulated gradients and clear them.
    pub fn step(&mut self, lr: f64) -> candle_core::Result<()> {
        let c = self.next_coeffs(lr);
        for (i, var) in self.vars.iter().enumerate() {
            if !std::mem::take(&mut self.touched[i]) {
                continue;
            }
            let op = Update {
                c,
                slot: std::cell::RefCell::new((&mut self.m[i], &mut self.v[i], &mut self.acc[i])),
            };
            var.as_tensor().inplace_op1(&op)?;
        }
        Ok(())
    }

    /// Apply one update to a dense model's parameters (`params`, in [`Dense`]'s order) and
    /// clear the accumulated gradients.
    pub fn step_dense(&mut self, lr: f64, params: &mut [Vec<f32>]) {
        let c = self.next_coeffs(lr);
        for (i, theta) in params.iter_mut().enumerate() {
            if std::mem::take(&mut self.touched[i]) {
                update(c, theta, &mut self.m[i], &mut self.v[i], &mut self.acc[i]);
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Coeffs {
    beta1: f32,
    beta2: f32,
    scale_m: f32,
    scale_v: f32,
    decay: f32,
    lr: f32,
    eps: f32,
}

/// One AdamW update of `theta` with gradient `acc` (then zeroed) and moments `m`, `v`.
/// Element-wise, so chunks on several threads give the same bytes as one thread.
fn update(c: Coeffs, theta: &mut [f32], m: &mut [f32], v: &mut [f32], acc: &mut [f32]) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 16;
    theta
        .par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(acc.par_chunks_mut(CHUNK))
        .for_each(|(((th, m), v), g)| {
            for (((th, m), v), g) in th.iter_mut().zip(m).zip(v).zip(g) {
                let gr = *g;
                *m = *m * c.beta1 + gr * (1.0 - c.beta1);
                *v = *v * c.beta2 + gr * gr * (1.0 - c.beta2);
                let m_hat = *m * c.scale_m;
                let v_hat = *v * c.scale_v;
                *th = *th * c.decay - c.lr * (m_hat / (v_hat.sqrt() + c.eps));
                *g = 0.0;
            }
        });
}

type SlotRefs<'a> = (&'a mut Vec<f32>, &'a mut Vec<f32>, &'a mut Vec<f32>);

struct Update<'a> {
    c: Coeffs,
    slot: std::cell::RefCell<SlotRefs<'a>>,
}

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(theta) = storage else {
            candle_core::bail!("AdamW: f32 parameters only")
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("AdamW: parameter is not contiguous")
        };
        let mut refs = self.slot.borrow_mut();
        let (m, v, acc) = &mut *refs;
        update(self.c, &mut theta[a..b], m, v, acc);
        Ok(())
    }
}
