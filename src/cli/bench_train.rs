//! `srlm bench train`: seconds per SFT example and DPO pair (full and LoRA), with the DPO step
//! split into forward, backward and AdamW, and peak memory, on the default model.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use super::bench_util::{cpu_seconds, peak_rss_mb};
use super::Ctx;
use crate::engine::dense::Dense;
use crate::engine::lora::{LoraConfig, LoraInit};
use crate::engine::train::{self, DenseLearner, Learner, Objective, TrainParams};

/// SFT and DPO seconds per example and peak memory on the default model, with ~200-token
/// sequences. The DPO step is split into forward, backward and AdamW; figures are medians
/// over `--steps` steps after one warm-up step.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model (.gguf, Hugging Face folder or srlm checkpoint) [default: the default model].
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Timed steps per configuration (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Approximate tokens per sequence (prompt + response).
    #[arg(long, default_value_t = 200)]
    pub tokens: usize,
    /// Pairs per optimizer step for the gradient-accumulation row (full DPO).
    #[arg(long, default_value_t = 4)]
    pub accum: usize,
    /// Time only full fine-tuning or only LoRA (default: both).
    #[arg(long, value_enum)]
    pub only: Option<Only>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which fine-tuning kind `--only` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Only {
    Full,
    Lora,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// English filler text of roughly `n` tokens (about 1.3 tokens per word).
fn text(seed: usize, n: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "answers",
        "questions",
        "about",
        "history",
        "and",
        "science",
        "with",
        "clear",
        "examples",
        "while",
        "a",
        "careful",
        "judge",
        "scores",
        "each",
        "response",
        "for",
        "relevance",
        "detail",
        "accuracy",
        "tone",
        "structure",
        "because",
        "training",
        "needs",
        "good",
        "pairs",
        "of",
        "answers",
        "from",
        "which",
        "to",
        "learn",
    ];
    let words = n * 3 / 4;
    (0..words)
        .map(|i| WORDS[(i * 7 + seed * 13 + i / 5) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

struct Row {
    name: String,
    per_example_s: f64,
    cpu_s: f64,
    forward_s: f64,
    backward_s: f64,
    adamw_s: f64,
    /// Largest activation tape one example kept for its backward pass.
    tape_mb: f64,
    peak_mb: Option<f64>,
}

/// Run `steps` optimizer steps of `accum` examples each (examples cycle through `n`);
/// per-example medians over all steps but the first (warm-up).
fn time_steps(
    learner: &mut dyn Learner,
    lr: f64,
    (n, steps, accum): (usize, usize, usize),
) -> anyhow::Result<Row> {
    let (mut fw, mut bw, mut ad, mut tot, mut cpu) = (vec![], vec![], vec![], vec![], vec![]);
    let mut next = 0;
    let mut tape = 0usize;
    for step in 0..steps + 1 {
        let t = Instant::now();
        let c0 = cpu_seconds().unwrap_or(f64::NAN);
        let (mut f, mut b) = (0.0, 0.0);
        for _ in 0..accum {
            let out = learner.example(next % n, accum)?;
            next += 1;
            f += out.forward_seconds;
            b += out.backward_seconds;
            tape = tape.max(out.tape_bytes);
        }
        let t3 = Instant::now();
        learner.step(lr)?;
        let a = t3.elapsed().as_secs_f64();
        if step > 0 {
            let k = accum as f64;
            fw.push(f / k);
            bw.push(b / k);
            ad.push(a / k);
            tot.push(t.elapsed().as_secs_f64() / k);
            cpu.push((cpu_seconds().unwrap_or(f64::NAN) - c0) / k);
        }
    }
    Ok(Row {
        name: String::new(),
        per_example_s: median(tot),
        cpu_s: median(cpu),
        forward_s: median(fw),
        backward_s: median(bw),
        adamw_s: median(ad),
        tape_mb: tape as f64 / (1 << 20) as f64,
        peak_mb: None,
    })
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steps >= 1 && args.accum >= 1,
        "--steps and --accum must be at least 1"
    );
    let path = crate::engine::model::resolve_model(args.model.map(|m| ctx.cwd.join(m)).as_deref())?;
    let t0 = Instant::now();
    let (mut loaded, enc) =
        train::load_for_training(&path).with_context(|| format!("loading {}", path.display()))?;
    let load_s = t0.elapsed().as_secs_f64();
    let prompt_tokens = args.tokens / 5;
    let resp_tokens = args.tokens - prompt_tokens;
    let prompt = text(0, prompt_tokens);
    let mut pairs = vec![];
    for i in 0..(args.steps + 1).min(4) {
        let c = enc.encode(&prompt, &text(2 * i + 1, resp_tokens))?;
        let r = enc.encode(&prompt, &text(2 * i + 2, resp_tokens))?;
        pairs.push((c, r));
    }
    let t0 = Instant::now();
    let refs = train::reference_logprobs(&loaded.cfg, &loaded.weights, &pairs)?;
    let ref_s = t0.elapsed().as_secs_f64() / pairs.len() as f64;
    let threads = candle_core::utils::get_num_threads();
    if !ctx.quiet {
        writeln!(
            ctx.err,
            "model {} loaded in {load_s:.1}s; sequences of {} / {} tokens (chosen / rejected), {threads} threads",
            path.display(),
            pairs[0].0.ids.len(),
            pairs[0].1.ids.len()
        )?;
    }
    let p = TrainParams {
        lr: 1e-6,
        ..TrainParams::default()
    };
    let mut rows = vec![];
    // LoRA first: VmHWM only grows, so each figure is the peak up to and including that run.
    let lora = LoraConfig::default();
    let n = pairs.len();
    let dpo = |i: usize| Objective::Dpo {
        chosen: &pairs[i].0,
        rejected: &pairs[i].1,
        reference: refs[i],
        beta: 0.1,
    };
    let sft = |i: usize| Objective::Sft(&pairs[i].0);
    let kinds: Vec<bool> = [false, true]
        .into_iter()
        .filter(|&full| {
            !matches!(
                (args.only, full),
                (Some(Only::Full), false) | (Some(Only::Lora), true)
            )
        })
        .collect();
    for (k, &full) in kinds.iter().enumerate() {
        let init = LoraInit { seed: 0 };
        let adapters = (!full).then_some((&lora, init));
        // The last model takes the weights, as training does: they are not held twice.
        let model = if k + 1 == kinds.len() {
            let w = std::mem::take(&mut loaded.weights);
            Dense::from_weights(&loaded.cfg, w, adapters)?
        } else {
            Dense::new(&loaded.cfg, &loaded.weights, adapters)?
        };
        let mut learner = DenseLearner::new(model, &p, dpo);
        let kind = if full { "full" } else { "LoRA" };
        // Gradient accumulation amortises AdamW, which only full fine-tuning pays for.
        let accums = if full && args.accum > 1 {
            vec![1, args.accum]
        } else {
            vec![1]
        };
        for accum in accums {
            let dpo = time_steps(&mut learner, p.lr, (n, args.steps, accum))?;
            rows.push(Row {
                name: format!("DPO {kind}, {accum} pair/step"),
                peak_mb: peak_rss_mb(),
                ..dpo
            });
        }
        // SFT on the chosen sequences, one example per step (from the weights DPO left: the
        // timing does not depend on them).
        let mut learner = DenseLearner::new(learner.into_model(), &p, sft);
        let sft = time_steps(&mut learner, p.lr, (n, args.steps, 1))?;
        rows.push(Row {
            name: format!("SFT {kind}, 1 example/step"),
            peak_mb: peak_rss_mb(),
            ..sft
        });
    }
    let seq: Vec<usize> = pairs
        .iter()
        .map(|(c, r)| c.ids.len() + r.ids.len())
        .collect();
    if args.json {
        let v = serde_json::json!({
            "model": path,
            "threads": threads,
            "load_seconds": load_s,
            "pair_tokens": seq[0],
            "reference_seconds_per_pair": ref_s,
            "runs": rows.iter().map(|r| serde_json::json!({
                "name": r.name,
                "seconds_per_example": r.per_example_s,
                "cpu_seconds_per_example": r.cpu_s,
                "forward_seconds": r.forward_s,
                "backward_seconds": r.backward_s,
                "adamw_seconds": r.adamw_s,
                "tape_mb": r.tape_mb,
                "peak_rss_mb": r.peak_mb,
            })).collect::<Vec<_>>(),
        });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.set_header([
        "run",
        "s/example",
        "CPU s/example",
        "forward s",
        "backward s",
        "AdamW s",
        "tape MB",
        "peak RSS MB",
    ]);
    for r in &rows {
        table.add_row([
            r.name.to_string(),
            format!("{:.2}", r.per_example_s),
            format!("{:.2}", r.cpu_s),
            format!("{:.2}", r.forward_s),
            format!("{:.2}", r.backward_s),
            format!("{:.2}", r.adamw_s),
            format!("{:.0}", r.tape_mb),
            r.peak_mb
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "?".into()),
        ]);
    }
    writeln!(ctx.out, "{table}")?;
    writeln!(
        ctx.out,
        "DPO pair = chosen + rejected, {} tokens in all; reference log-probs {ref_s:.2} s/pair (once per dataset); {threads} threads; load average {}",
        seq[0],
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    )?;
    Ok(())
}
