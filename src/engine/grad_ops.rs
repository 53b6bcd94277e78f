//! Fused CPU ops with hand-written backward passes for the trainable llama.
//!
//! candle's autograd gives every graph node's gradient a fresh zero tensor plus an add, so
//! a composite op (rms-norm from seven ops, softmax from five, rope from seven, log-softmax
//! over a 49k vocabulary from six) costs several full-size passes and allocations in the
//! backward pass. Each op here is one node whose backward computes its inputs' gradients in
//! one pass, and skips the gradient of an input that is not trained. f32, contiguous, CPU.
use std::sync::Mutex;

use candle_core::backend::BackendStorage;

use super::dense::{
    causal_softmax_backward_row, causal_softmax_row, log_softmax_in_place, rms_inv,
    rms_norm_backward_row, silu, swiglu_grad,
};
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, Device, Layout, Result, Shape, Storage, Tensor,
};

/// The contiguous f32 data a layout points at.
fn data<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: f32 only")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// Run `f` on a tensor's data as a contiguous f32 slice (copying only if it is strided).
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (st, l) = t.storage_and_layout();
    match &*st {
        Storage::Cpu(s) => Ok(f(data(s, l, "grad-ops")?)),
        _ => bail!("grad-ops: CPU tensors only"),
    }
}

fn tensor(v: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// `x W^T` over the last dimension of `x` (`(.., in)`, `W` `(out, in)`). The backward
/// computes `W`'s gradient directly as `(out, in)` (candle's broadcast matmul builds it as a
/// broadcast, transposed view and copies it twice) and only when `W` is trained.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, Linear)
}

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (out, inp) = l2.shape().dims2()?;
        let dims = l1.shape().dims();
        let Some(&k) = dims.last() else {
            bail!("linear: scalar input")
        };
        if k != inp || !l1.is_contiguous() || !l2.is_contiguous() {
            bail!("linear: {:?} x {:?}^T", l1.shape(), l2.shape())
        }
        let m = l1.shape().elem_count() / k;
        let lhs = Layout::contiguous_with_offset((m, k), l1.start_offset());
        let rhs = Layout::contiguous_with_offset((out, inp), l2.start_offset()).transpose(0, 1)?;
        let y = s1.matmul(s2, (1, m, out, k), &lhs, &rhs)?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("non-empty") = out;
        Ok((y, Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (out, inp) = w.dims2()?;
        let g = g.detach().contiguous()?.reshape(((), out))?;
        let gx = if x.track_op() {
            Some(g.matmul(&w.detach())?.reshape(x.shape())?)
        } else {
            None
        };
        let gw = if w.track_op() {
            let x = x.detach().reshape(((), inp))?;
            Some(g.t()?.matmul(&x)?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// RMS norm over the last dimension, `x / sqrt(mean(x²) + eps) * w`, as candle's
/// `rms_norm_slow` computes it.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = data(s1, l1, "rms-norm")?;
        let w = data(s2, l2, "rms-norm")?;
        let d = w.len();
        if l1.shape().dims().last() != Some(&d) {
            bail!("rms-norm: {:?} vs weight {d}", l1.shape())
        }
        let mut y = vec![0f32; x.len()];
        for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
            let inv = rms_inv(xr, self.eps);
            for ((y, x), w) in yr.iter_mut().zip(xr).zip(w) {
                *y = x * inv * w;
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = w.dim(0)?;
        let (want_x, want_w) = (x.track_op(), w.track_op());
        let (gx, gw) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(g, |g| {
                    let mut gx = vec![0f32; if want_x { x.len() } else { 0 }];
                    let mut gw = vec![0f32; d];
                    for (r, (xr, gr)) in x.chunks_exact(d).zip(g.chunks_exact(d)).enumerate() {
                        let inv = rms_inv(xr, self.eps);
                        if want_w {
                            for ((gw, x), g) in gw.iter_mut().zip(xr).zip(gr) {
                                *gw += g * x * inv;
                            }
                        }
                        if want_x {
                            rms_norm_backward_row(xr, inv, w, gr, &mut gx[r * d..(r + 1) * d]);
                        }
                    }
                    (gx, gw)
                })
            })
        })???;
        let gx = if want_x {
            Some(tensor(gx, x.shape())?)
        } else {
            None
        };
        let gw = if want_w { Some(tensor(gw, d)?) } else { None };
        Ok((gx, gw))
    }
}

/// Rotary embedding (Hugging Face's rotate-half layout) fused with the head split: `x` is a
/// projection's output `(b, t, heads * hd)`, the result `(b, heads, t, hd)`; `cos`/`sin` are
/// `(t, hd / 2)`. Replaces reshape + transpose + copy + `rope_slow`'s seven ops.
pub fn rope_heads(x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<Tensor> {
    let (_, t, _) = x.dims3()?;
    let half = cos.dim(1)?;
    let take = |c: &Tensor| -> Result<Vec<f32>> { c.narrow(0, 0, t)?.flatten_all()?.to_vec1() };
    x.contiguous()?.apply_op1(Rope {
        cos: take(cos)?,
        sin: take(sin)?,
        heads,
        half,
    })
}

struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    heads: usize,
    half: usize,
}

impl Rope {
    /// Map between `(b, t, heads*hd)` (`src`) and `(b, heads, t, hd)` (`dst`) rows, rotating
    /// by `+θ` (forward) or `-θ` (backward: the rotation's transpose), in either direction.
    fn apply(&self, b: usize, t: usize, src: &[f32], to_heads: bool, sign: f32) -> Vec<f32> {
        let (n, h) = (self.heads, self.half);
        let hd = 2 * h;
        let mut out = vec![0f32; src.len()];
        for bi in 0..b {
            for ti in 0..t {
                let (c, s) = (&self.cos[ti * h..][..h], &self.sin[ti * h..][..h]);
                for hi in 0..n {
                    let flat = ((bi * t + ti) * n + hi) * hd;
                    let split = ((bi * n + hi) * t + ti) * hd;
                    let (i, o) = if to_heads {
                        (flat, split)
                    } else {
                        (split, flat)
                    };
                    let (x1, x2) = src[i..i + hd].split_at(h);
                    let (o1, o2) = out[o..o + hd].split_at_mut(h);
                    for k in 0..h {
                        let (c, s) = (c[k], sign * s[k]);
                        o1[k] = x1[k] * c - x2[k] * s;
                        o2[k] = x2[k] * c + x1[k] * s;
                    }
                }
            }
        }
        out
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l, "rope")?;
        let (b, t, e) = l.shape().dims3()?;
        if e != self.heads * 2 * self.half || self.cos.len() != t * self.half {
            bail!("rope: {:?} for {} heads", l.shape(), self.heads)
        }
        let y = self.apply(b, t, x, true, 1.0);
        let shape = Shape::from((b, self.heads, t, 2 * self.half));
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (b, t, _) = x.dims3()?;
        let gx = with_data(g, |g| self.apply(b, t, g, false, -1.0))?;
        Ok(Some(tensor(gx, x.shape())?))
    }
}

/// Causal softmax of attention scores `s` shaped `(b, kv_heads, rep * t, t)`: grouped-query
/// heads stacked along the rows (query row `r·t + i` is position `i`), so the matmuls need no
/// `repeat_kv` copies. Computes `softmax(scale · s)` over keys `0..=i`; later keys get 0.
pub fn causal_softmax(s: &Tensor, t: usize, scale: f32) -> Result<Tensor> {
    s.contiguous()?.apply_op1(CausalSoftmax { t, scale })
}

struct CausalSoftmax {
    t: usize,
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = data(s, l, "causal-softmax")?;
        let t = self.t;
        if l.shape().dims().last() != Some(&t) {
            bail!("causal-softmax: {:?} for {t} positions", l.shape())
        }
        let mut y = x.to_vec();
        for (r, yr) in y.chunks_exact_mut(t).enumerate() {
            causal_softmax_row(yr, r % t + 1, self.scale);
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _s: &Tensor, res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let t = self.t;
        let gs = with_data(res, |y| {
            with_data(g, |g| {
                let mut gs = g.to_vec();
                for (r, (yr, out)) in y.chunks_exact(t).zip(gs.chunks_exact_mut(t)).enumerate() {
                    causal_softmax_backward_row(out, yr, r % t + 1, self.scale);
                }
                gs
            })
        })??;
        Ok(Some(tensor(gs, res.shape())?))
    }
}

/// `silu(gate) * up`, the llama MLP's gating.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, u) = (data(s1, l1, "swiglu")?, data(s2, l2, "swiglu")?);
        if l1.shape() != l2.shape() {
            bail!("swiglu: {:?} vs {:?}", l1.shape(), l2.shape())
        }
        let y = a.iter().zip(u).map(|(a, u)| silu(*a) * u).collect();
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (ga, gu) = with_data(gate, |a| {
            with_data(up, |u| {
                with_data(g, |g| {
                    let mut ga = vec![0f32; a.len()];
                    let mut gu = vec![0f32; a.len()];
                    for i in 0..a.len() {
                        (ga[i], gu[i]) = swiglu_grad(a[i], u[i], g[i]);
                    }
                    (ga, gu)
                })
            })
        })???;
        Ok((
            Some(tensor(ga, gate.shape())?),
            Some(tensor(gu, up.shape())?),
        ))
    }
}

/// Log-probabilities of `targets[i]` under `softmax(h[i] W^T)`, for hidden states `h`
/// `(n, d)` and the output matrix `W` `(vocab, d)`: the lm-head, log-softmax and gather in one
/// op. The forward keeps the `(n, vocab)` probabilities for the backward, which turns them in
/// place into the logits' gradient `g_i (onehot(t_i) - p_i)`.
pub fn lm_head_logprobs(h: &Tensor, w: &Tensor, targets: &[u32]) -> Result<Tensor> {
    let (n, _) = h.dims2()?;
    let vocab = w.dim(0)?;
    if targets.len() != n || targets.iter().any(|&t| t as usize >= vocab) {
        bail!("lm-head-logprobs: {} targets for {n} rows", targets.len())
    }
    h.contiguous()?.apply_op2(
        &w.contiguous()?,
        LmHeadLogprobs {
            targets: targets.to_vec(),
            probs: Mutex::new(None),
        },
    )
}

struct LmHeadLogprobs {
    targets: Vec<u32>,
    probs: Mutex<Option<Vec<f32>>>,
}

impl CustomOp2 for LmHeadLogprobs {
    fn name(&self) -> &'static str {
        "lm-head-logprobs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, k) = l1.shape().dims2()?;
        let (vocab, _) = l2.shape().dims2()?;
        let rhs = Layout::contiguous_with_offset((vocab, k), l2.start_offset()).transpose(0, 1)?;
        let lhs = Layout::contiguous_with_offset((n, k), l1.start_offset());
        let CpuStorage::F32(mut p) = s1.matmul(s2, (1, n, vocab, k), &lhs, &rhs)? else {
            bail!("lm-head-logprobs: f32 only")
        };
        let mut out = Vec::with_capacity(n);
        for (row, &t) in p.chunks_exact_mut(vocab).zip(&self.targets) {
            out.push(log_softmax_in_place(row, t as usize));
        }
        *self.probs.lock().expect("not poisoned") = Some(p);
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, vocab) = (h.dim(0)?, w.dim(0)?);
        // The forward's probabilities are consumed by the first backward; a second backward
        // over the same graph recomputes them.
        let cached = self.probs.lock().expect("not poisoned").take();
        let mut p = match cached {
            Some(p) => p,
            None => {
                let mut p: Vec<f32> = h
                    .detach()
                    .matmul(&w.detach().t()?)?
                    .flatten_all()?
                    .to_vec1()?;
                for (row, &t) in p.chunks_exact_mut(vocab).zip(&self.targets) {
                    log_softmax_in_place(row, t as usize);
                }
                p
            }
        };
        let g: Vec<f32> = g.detach().contiguous()?.to_vec1()?;
        for ((row, &t), gi) in p.chunks_exact_mut(vocab).zip(&self.targets).zip(&g) {
            for v in row.iter_mut() {
                *v *= -gi;
            }
            row[t as usize] += gi;
        }
        let gl = tensor(p, (n, vocab))?;
        let gh = if h.track_op() {
            Some(gl.matmul(&w.detach())?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(gl.t()?.matmul(&h.detach())?)
        } else {
            None
        };
        Ok((gh, gw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::llama::tests::max_abs_diff;
    use candle_core::{Var, D};
    use rand::{Rng, SeedableRng};

    fn rand_var(shape: &[usize], seed: u64) -> Var {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.gen::<f32>() * 2.0 - 1.0).collect();
        Var::from_tensor(&tensor(v, shape).unwrap()).unwrap()
    }

    /// Value and gradients of `f(a, b)` weighted by a fixed random tensor, for both versions.
    fn check2(
        a: &Var,
        b: &Var,
        ours: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
        reference: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
        tol: f32,
    ) {
        let y1 = ours(a.as_tensor(), b.as_tensor()).unwrap();
        let y2 = reference(a.as_tensor(), b.as_tensor()).unwrap();
        check_outputs(&[a, b], &y1, &y2, tol);
    }

    /// `y1` (ours) and `y2` (the reference) agree in value, and so do the gradients they give
    /// `vars` under one random weighting of the outputs.
    fn check_outputs(vars: &[&Var], y1: &Tensor, y2: &Tensor, tol: f32) {
        assert_eq!(y1.shape(), y2.shape());
        let d = max_abs_diff(y1, y2);
        assert!(d < tol, "values differ by {d}");
        let wgt = rand_var(y1.dims(), 99).as_tensor().detach();
        let g1 = (y1 * &wgt).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (y2 * &wgt).unwrap().sum_all().unwrap().backward().unwrap();
        for v in vars {
            let d = max_abs_diff(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(d < tol, "gradients differ by {d}");
        }
    }

    #[test]
    fn linear_matches_matmul() {
        let (x, w) = (rand_var(&[2, 5, 8], 1), rand_var(&[6, 8], 2));
        check2(&x, &w, linear, |x, w| x.broadcast_matmul(&w.t()?), 1e-5);
        // A frozen weight gets no gradient.
        let g = linear(x.as_tensor(), &w.as_tensor().detach())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(x.as_tensor()).is_some());
    }

    #[test]
    fn rms_norm_matches_slow() {
        let (x, w) = (rand_var(&[2, 3, 16], 3), rand_var(&[16], 4));
        check2(
            &x,
            &w,
            |x, w| rms_norm(x, w, 1e-5),
            |x, w| candle_nn::ops::rms_norm_slow(x, w, 1e-5),
            1e-5,
        );
    }

    #[test]
    fn swiglu_matches_silu_mul() {
        let (a, u) = (rand_var(&[3, 10], 5), rand_var(&[3, 10], 6));
        check2(&a, &u, swiglu, |a, u| a.silu()? * u, 1e-5);
    }

    #[test]
    fn rope_matches_rope_slow() {
        let (b, t, n, hd) = (2, 5, 3, 8);
        let x = rand_var(&[b, t, n * hd], 7);
        let cs = rand_var(&[6, hd / 2], 8);
        let sn = rand_var(&[6, hd / 2], 9);
        let (cos, sin) = (cs.as_tensor().detach(), sn.as_tensor().detach());
        let ours = rope_heads(x.as_tensor(), &cos, &sin, n).unwrap();
        let split = |x: &Tensor| -> Result<Tensor> {
            x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let theirs = candle_nn::rotary_emb::rope_slow(
            &split(x.as_tensor()).unwrap(),
            &cos.narrow(0, 0, t).unwrap(),
            &sin.narrow(0, 0, t).unwrap(),
        )
        .unwrap();
        check_outputs(&[&x], &ours, &theirs, 1e-5);
    }

    #[test]
    fn causal_softmax_matches_masked_softmax() {
        let (rep, t) = (2, 5);
        let s = rand_var(&[2, 3, rep * t, t], 11);
        let mask: Vec<f32> = (0..rep * t)
            .flat_map(|r| (0..t).map(move |j| if j > r % t { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = tensor(mask, (rep * t, t)).unwrap();
        let ours = causal_softmax(s.as_tensor(), t, 0.5).unwrap();
        let theirs = candle_nn::ops::softmax(
            &(s.as_tensor() * 0.5).unwrap().broadcast_add(&mask).unwrap(),
            D::Minus1,
        )
        .unwrap();
        check_outputs(&[&s], &ours, &theirs, 1e-5);
    }

    #[test]
    fn lm_head_logprobs_match_log_softmax_gather() {
        let (h, w) = (rand_var(&[4, 8], 13), rand_var(&[30, 8], 14));
        let targets = [3u32, 0, 29, 7];
        let tt = Tensor::new(&targets[..], &Device::Cpu)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        check2(
            &h,
            &w,
            |h, w| lm_head_logprobs(h, w, &targets),
            |h, w| {
                let logp = candle_nn::ops::log_softmax(&h.matmul(&w.t()?)?, D::Minus1)?;
                logp.gather(&tt, 1)?.squeeze(1)
            },
            1e-5,
        );
        // A second backward over the same graph recomputes the probabilities.
        let y = lm_head_logprobs(h.as_tensor(), w.as_tensor(), &targets)
            .unwrap()
            .sum_all()
            .unwrap();
        let g1 = y.backward().unwrap();
        let g2 = y.backward().unwrap();
        let d = max_abs_diff(
            g1.get(w.as_tensor()).unwrap(),
            g2.get(w.as_tensor()).unwrap(),
        );
        assert!(d < 1e-6, "second backward differs by {d}");
    }
}
