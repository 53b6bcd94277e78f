//! LoRA: low-rank adapters `W + (alpha/rank) B A` on chosen projections, initialised from
//! srlm's own seeded RNG (candle's CPU `randn` cannot be seeded), and merged into full weights.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use candle_core::Tensor;

use super::weights::Weights;

/// LoRA hyper-parameters (stored in the checkpoint's `srlm-checkpoint.json` and run records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank of the adapter matrices.
    pub rank: usize,
    /// Scale numerator: the update is `alpha / rank * B A`.
    pub alpha: f64,
    /// Projection names the adapters attach to (`q_proj`, `k_proj`, `v_proj`, `o_proj`,
    /// `gate_proj`, `up_proj`, `down_proj`, `lm_head`).
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: ["q_proj", "k_proj", "v_proj", "o_proj"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl LoraConfig {
    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Whether the projection `name` (`model.layers.3.self_attn.q_proj`, `lm_head`) gets an adapter.
    pub fn targets(&self, name: &str) -> bool {
        let last = name.rsplit('.').next().unwrap_or(name);
        self.targets.iter().any(|t| t == last)
    }
}

/// Where LoRA's random initial values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraInit {
    pub seed: u64,
}

impl LoraInit {
    pub(crate) fn rng(&self) -> ChaCha8Rng {
        // A stream distinct from the data-shuffling RNG seeded with the same number.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(1);
        rng
    }
}

/// A fresh adapter pair for a `(out_dim, in_dim)` weight: A `(rank, in)` uniform in
/// ±1/sqrt(in) (PEFT's Kaiming-uniform bound with a=sqrt(5)), B `(out, rank)` zero, so training
/// starts from the base model exactly.
pub(crate) fn init_pair(
    cfg: &LoraConfig,
    in_dim: usize,
    out_dim: usize,
    rng: &mut ChaCha8Rng,
) -> candle_core::Result<(Tensor, Tensor)> {
    let bound = 1.0 / (in_dim as f32).sqrt();
    let a: Vec<f32> = (0..cfg.rank * in_dim)
        .map(|_| rng.gen_range(-bound..bound))
        .collect();
    let a = Tensor::from_vec(a, (cfg.rank, in_dim), &candle_core::Device::Cpu)?;
    let b = Tensor::zeros(
        (out_dim, cfg.rank),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    Ok((a, b))
}

/// Merge adapter matrices (`<proj>.lora_A.weight`, `<proj>.lora_B.weight`) into base weights.
pub fn merge(base: &Weights, adapter: &Weights, cfg: &LoraConfig) -> candle_core::Result<Weights> {
    let mut out = base.clone();
    for (name, a) in &adapter.0 {
        let Some(proj) = name.strip_suffix(".lora_A.weight") else {
            continue;
        };
        let b = adapter
            .get(&format!("{proj}.lora_B.weight"))
            .ok_or_else(|| candle_core::Error::Msg(format!("adapter has {name} but no lora_B")))?;
        let key = format!("{proj}.weight");
        let w = match base.get(&key) {
            Some(w) => w.clone(),
            // An adapter on a tied lm_head starts from the embedding.
            None if proj == "lm_head" => base
                .get("model.embed_tokens.weight")
                .ok_or_else(|| candle_core::Error::Msg("no embedding to tie lm_head to".into()))?
                .clone(),
            None => candle_core::bail!("adapter targets {key}, which the base model lacks"),
        };
        out.0.insert(key, (w + (b.matmul(a)? * cfg.scale())?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::llama::tests::max_abs_diff;
    use crate::engine::llama::{tests::tiny, Llama, Trainable};
    use candle_core::Device;

    #[test]
    fn merged_weights_give_the_adapter_models_logits() {
        let (cfg, w) = tiny(5);
        let lc = LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: ["q_proj", "v_proj", "down_proj"].map(String::from).to_vec(),
        };
        let model =
            Llama::new(&cfg, &w, &Trainable::Lora(lc.clone(), LoraInit { seed: 3 })).unwrap();
        assert_eq!(model.params.len(), 2 * 3 * cfg.num_hidden_layers);
        // B starts at zero; give it values so the adapter matters.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (name, var) in &model.params {
            if name.ends_with("lora_B.weight") {
                let n = var.elem_count();
                let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-0.2..0.2)).collect();
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let ids = Tensor::new(&[[4u32, 8, 15, 16, 23, 42]], &Device::Cpu).unwrap();
        let with_adapter = model.forward(&ids).unwrap();
        let base = Llama::new(&cfg, &w, &Trainable::None)
            .unwrap()
            .forward(&ids)
            .unwrap();
        let moved: f32 = max_abs_diff(&with_adapter, &base);
        assert!(moved > 1e-3, "adapter has no effect ({moved})");

        for merged in [
            model.merged_weights().unwrap(),
            merge(&w, &model.lora_weights(), &lc).unwrap(),
        ] {
            let m = Llama::new(&cfg, &merged, &Trainable::None)
                .unwrap()
                .forward(&ids)
                .unwrap();
            let d: f32 = max_abs_diff(&m, &with_adapter);
            assert!(d < 1e-4, "merged logits differ by {d}");
        }
    }

    #[test]
    fn init_is_seeded() {
        let (cfg, w) = tiny(5);
        let lc = LoraConfig::default();
        let a = Llama::new(&cfg, &w, &Trainable::Lora(lc.clone(), LoraInit { seed: 1 }))
            .unwrap()
            .lora_weights();
        let b = Llama::new(&cfg, &w, &Trainable::Lora(lc.clone(), LoraInit { seed: 1 }))
            .unwrap()
            .lora_weights();
        let c = Llama::new(&cfg, &w, &Trainable::Lora(lc, LoraInit { seed: 2 }))
            .unwrap()
            .lora_weights();
        let name = "model.layers.0.self_attn.q_proj.lora_A.weight";
        let v = |x: &Weights| -> Vec<f32> {
            x.get(name)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
    }
}
