//! The dense trainer's backward pass: from the loss's derivative by each scored token's
//! log-probability, through the lm-head, every layer (freeing its tape as it goes) and the
//! embedding, into the gradient accumulators.
use super::super::dense_head;
use super::super::dense_ops::*;
use super::*;

impl Dense {
    /// Add the gradient of a loss to `grads`, given the loss's derivative with respect to
    /// each response token's log-probability (`dlp[s][i]`, shaped like the forward's output).
    pub fn backward(&self, tape: Tape, dlp: &[Vec<f32>], grads: &mut [Vec<f32>]) {
        let cfg = &self.cfg;
        let Tape {
            packed,
            mut layers,
            xf,
            invf,
            hs,
            lse,
        } = tape;
        let (n, d, ff) = (packed.ids.len(), cfg.hidden_size, cfg.intermediate_size);
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let qw = nh * hd;
        let g: Vec<f32> = dlp.iter().flatten().copied().collect();
        assert_eq!(
            g.len(),
            packed.targets.len(),
            "one derivative per scored token"
        );
        let mut dhs = vec![0f32; g.len() * d];
        let cols = dense_head::vocab_block(g.len(), cfg.vocab_size);
        let dhead = Some(grads[self.lm_head].as_mut_slice()).filter(|v| !v.is_empty());
        let head = &self.params[self.lm_head];
        dense_head::backward(&hs, head, &packed.targets, &lse, &g, cols, &mut dhs, dhead);
        drop(hs);
        let g = grads;
        let mut dh = vec![0f32; n * d];
        for (src, &row) in dhs.chunks_exact(d).zip(&packed.rows) {
            dh[row * d..][..d].copy_from_slice(src);
        }
        let mut dx = vec![0f32; n * d];
        rms_norm_backward(
            &xf,
            &invf,
            &self.params[self.norm],
            &dh,
            &mut dx,
            &mut g[self.norm],
        );
        // Each layer's tape is freed once its backward pass is done.
        for li in self.layers.iter().rev() {
            let t = layers.pop().expect("one tape per layer");
            let w = |i: usize| self.params[i].as_slice();
            // MLP: x' = xm + act W_down^T.
            let mut dgate = vec![0f32; n * ff];
            let act = swiglu(&t.gate, &t.up);
            self.project_backward(&mut dgate, &dx, &act, li.projs[DOWN], &t.low[DOWN], n, g);
            drop(act);
            let dup = swiglu_backward(&t.gate, &t.up, &mut dgate);
            let mut dh2 = vec![0f32; n * d];
            let h2 = rms_norm_with(&t.xm, &t.inv2, w(li.ln2));
            self.project_backward(&mut dh2, &dgate, &h2, li.projs[GATE], &t.low[GATE], n, g);
            self.project_backward(&mut dh2, &dup, &h2, li.projs[UP], &t.low[UP], n, g);
            drop((h2, dgate, dup));
            let mut dxm = dx;
            rms_norm_backward(&t.xm, &t.inv2, w(li.ln2), &dh2, &mut dxm, &mut g[li.ln2]);
            // Attention: xm = x + y W_o^T.
            let mut dy = vec![0f32; n * qw];
            self.project_backward(&mut dy, &dxm, &t.y, li.projs[O], &t.low[O], n, g);
            let (mut dq, mut dk, dv) = self.attention_backward(&packed, t.saved(), &dy);
            self.rope(&mut dq, nh, &packed.pos, -1.0);
            self.rope(&mut dk, nkv, &packed.pos, -1.0);
            let mut dh1 = vec![0f32; n * d];
            let h1 = rms_norm_with(&t.x, &t.inv1, w(li.ln1));
            self.project_backward(&mut dh1, &dq, &h1, li.projs[Q], &t.low[Q], n, g);
            self.project_backward(&mut dh1, &dk, &h1, li.projs[K], &t.low[K], n, g);
            self.project_backward(&mut dh1, &dv, &h1, li.projs[V], &t.low[V], n, g);
            drop(h1);
            dx = dxm;
            rms_norm_backward(&t.x, &t.inv1, w(li.ln1), &dh1, &mut dx, &mut g[li.ln1]);
        }
        // Embedding rows, in row order (a token may repeat).
        let ge = &mut g[self.embed];
        if ge.is_empty() {
            return;
        }
        for (row, &id) in dx.chunks_exact(d).zip(&packed.ids) {
            for (a, b) in ge[id as usize * d..][..d].iter_mut().zip(row) {
                *a += b;
            }
        }
    }

    /// Backward of [`Dense::project`]: adds the input's gradient to `dx` and the trained
    /// weights' gradients to `g`.
    #[allow(clippy::too_many_arguments)]
    fn project_backward(
        &self,
        dx: &mut [f32],
        dy: &[f32],
        x: &[f32],
        p: Proj,
        low: &Option<Vec<f32>>,
        n: usize,
        g: &mut [Vec<f32>],
    ) {
        linear_backward_input(dx, dy, &self.params[p.w], n, true);
        if !g[p.w].is_empty() {
            weight_grad(&mut g[p.w], dy, x, n);
        }
        if let Some(ib) = p.b.filter(|&ib| !g[ib].is_empty()) {
            // Rows in order: the same sum at any thread count.
            let gb = &mut g[ib];
            for row in dy.chunks_exact(gb.len()) {
                gb.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        let (Some((a, b)), Some(low)) = (p.lora, low) else {
            return;
        };
        let scale = self.lora_scale();
        let rank = self.shape_rows(a);
        // y += s·t B^T with t = x A^T: dB += s·dy^T t, dt = s·dy B, dA += dt^T x, dx += dt A.
        let scaled: Vec<f32> = low.iter().map(|v| v * scale).collect();
        weight_grad(&mut g[b], dy, &scaled, n);
        let mut dt = vec![0f32; n * rank];
        linear_backward_input(&mut dt, dy, &self.params[b], n, false);
        dt.iter_mut().for_each(|v| *v *= scale);
        weight_grad(&mut g[a], &dt, x, n);
        linear_backward_input(dx, &dt, &self.params[a], n, true);
    }
}
