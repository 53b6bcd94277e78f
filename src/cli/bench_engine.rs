//! `srlm bench engine`: prefill and decode tokens/s, batched decode, and judge seconds per
//! response, for each way of holding the weights.
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Tensor;

use super::Ctx;
use crate::engine::generate::SamplingParams;
use crate::engine::judge::{Judge, JudgeParams};
use crate::engine::model::{load, resolve_model, KvCache, Model, WeightMode};

/// Prefill / decode tokens per second and judge seconds per response on the default model.
///
/// For each weight mode: prefill tokens/s on a judge prompt, decode tokens/s for one sequence
/// and for a batch of N sharing its prefill, sampled judging (k samples) and digit-probability
/// judging, in seconds per response. Threads: rayon's pool (RAYON_NUM_THREADS, else all cores).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model (default: $SRLM_MODEL, else the default SmolLM2 GGUF).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Weight modes to compare, comma-separated (stored, q8_0, q4_0, f32).
    #[arg(long, value_delimiter = ',', default_value = "stored,q8_0")]
    pub weights: Vec<WeightMode>,
    /// Decode steps per measurement.
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// Batch size for the batched decode.
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    /// Responses judged per sampled-judge measurement (cycling through 4 built-in pairs).
    #[arg(long, default_value_t = 4)]
    pub responses: usize,
    /// Judgements sampled per response.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    /// Token limit of one sampled judgement.
    #[arg(long, default_value_t = 128)]
    pub judge_tokens: usize,
    /// Skip the (slow) sampled-judge measurement.
    #[arg(long)]
    pub no_judge: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    weights: String,
    load_s: f64,
    prompt_tokens: usize,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    batch: usize,
    batch_decode_tok_s: f64,
    judge_s_per_response: Option<f64>,
    judge_tokens_per_response: Option<f64>,
    /// Sampled judgements with a parseable `Score: N`, and how many were sampled.
    judge_parsed: Option<(usize, usize)>,
    digit_judge_s_per_response: f64,
    /// Expected digit score of each built-in pair (good, poor, "Huh?", off-topic).
    digit_scores: Vec<f64>,
}

const INSTRUCTION: &str = "What are the main differences between a list and a tuple in Python, and when should I use each?";
/// Judged pairs: a good answer, a poor one, a non-answer, an off-topic one.
const PAIRS: [(&str, &str); 4] = [
    (INSTRUCTION, RESPONSE),
    ("How do I boil an egg?", "Put it in water."),
    ("Explain photosynthesis in two sentences.", "Huh?"),
    (
        "What is the capital of Japan?",
        "Bananas are rich in potassium.",
    ),
];

const RESPONSE: &str = "Lists are mutable: you can append, remove and change items, which suits collections that grow or change. Tuples are immutable, so they are hashable (usable as dictionary keys), slightly smaller and faster to create, and signal that the data should not change, such as coordinates or database rows. Use a list for a sequence of similar items you will modify, and a tuple for a fixed record of possibly different fields.";

/// Greedy decode of `steps` tokens for a batch of `n` after a shared prefill (stops ignored).
fn decode(
    model: &Model,
    cache: &KvCache,
    first: u32,
    steps: usize,
    n: usize,
) -> anyhow::Result<f64> {
    let mut c = if n == 1 {
        cache.fork(steps + 1)?
    } else {
        cache.fork(steps + 1)?.repeat(n)?
    };
    let mut toks = vec![first; n];
    let t0 = Instant::now();
    for _ in 0..steps {
        let t = Tensor::new(toks.as_slice(), model.device())?.unsqueeze(1)?;
        let logits = model.forward(&t, &mut c)?;
        toks = logits.argmax(candle_core::D::Minus1)?.to_vec1()?;
    }
    Ok((steps * n) as f64 / t0.elapsed().as_secs_f64())
}

fn measure(args: &Args, path: &std::path::Path, mode: WeightMode) -> anyhow::Result<Row> {
    let t0 = Instant::now();
    let model = load(path, mode)?;
    let load_s = t0.elapsed().as_secs_f64();
    let judge = Judge::new(&model)?;
    let text = judge.text(INSTRUCTION, RESPONSE)?;
    let ids = model.encode(&text)?;
    // Warm up (thread pool, allocations) on a short input.
    let warm = Tensor::new(&ids[..8.min(ids.len())], model.device())?.unsqueeze(0)?;
    model.forward(&warm, &mut KvCache::new(&model))?;

    let t = Tensor::new(ids.as_slice(), model.device())?.unsqueeze(0)?;
    let mut cache = KvCache::new(&model);
    let t0 = Instant::now();
    let logits = model.forward(&t, &mut cache)?;
    let prefill_tok_s = ids.len() as f64 / t0.elapsed().as_secs_f64();
    let first: u32 = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?[0];

    let decode_tok_s = decode(&model, &cache, first, args.tokens, 1)?;
    let batch_decode_tok_s = decode(&model, &cache, first, args.tokens, args.n)?;

    let (judge_s, judge_tokens, judge_parsed) = if args.no_judge {
        (None, None, None)
    } else {
        let params = JudgeParams {
            samples: args.samples,
            sampling: SamplingParams {
                max_tokens: args.judge_tokens,
                seed: 1,
                ..SamplingParams::default()
            },
        };
        let t0 = Instant::now();
        let mut tokens = 0usize;
        let (mut parsed, mut sampled) = (0, 0);
        for i in 0..args.responses {
            let (ins, resp) = PAIRS[i % PAIRS.len()];
            let j = judge.judge(ins, resp, &params, &mut |_| {})?;
            tokens += j
                .samples
                .iter()
                .map(|s| model.encode(&s.text).map(|v| v.len()).unwrap_or(0))
                .sum::<usize>();
            parsed += j.samples.iter().filter(|s| s.score.is_some()).count();
            sampled += j.samples.len();
        }
        let n = args.responses.max(1) as f64;
        (
            Some(t0.elapsed().as_secs_f64() / n),
            Some(tokens as f64 / n),
            Some((parsed, sampled)),
        )
    };
    let t0 = Instant::now();
    let mut digit_scores = Vec::new();
    for (ins, resp) in PAIRS {
        digit_scores.push(judge.digit_score(ins, resp)?.expected);
    }
    let digit = t0.elapsed().as_secs_f64() / PAIRS.len() as f64;
    Ok(Row {
        weights: model.weights.clone(),
        load_s,
        prompt_tokens: ids.len(),
        prefill_tok_s,
        decode_tok_s,
        batch: args.n,
        batch_decode_tok_s,
        judge_s_per_response: judge_s,
        judge_tokens_per_response: judge_tokens,
        judge_parsed,
        digit_judge_s_per_response: digit,
        digit_scores,
    })
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let path = resolve_model(args.model.as_deref().map(|p| ctx.cwd.join(p)).as_deref())?;
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    for &mode in &args.weights {
        if !ctx.quiet {
            writeln!(ctx.err, "measuring {mode:?} ...")?;
        }
        rows.push(measure(&args, &path, mode)?);
    }
    if args.json {
        let v = serde_json::json!({
            "model": path.display().to_string(),
            "threads": threads,
            "rows": rows,
        });
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(ctx.out, "model {} | {threads} threads", path.display())?;
    let mut table = comfy_table::Table::new();
    table.set_header(vec![
        "weights".to_string(),
        "load s".into(),
        "prefill tok/s".into(),
        "decode tok/s".into(),
        format!("decode N={} tok/s", args.n),
        format!("judge s/resp (k={})", args.samples),
        "digit judge s/resp (scores: good, poor, Huh?, off-topic)".into(),
    ]);
    for r in &rows {
        table.add_row(vec![
            r.weights.clone(),
            format!("{:.2}", r.load_s),
            format!("{:.0} ({} tok)", r.prefill_tok_s, r.prompt_tokens),
            format!("{:.1}", r.decode_tok_s),
            format!("{:.1}", r.batch_decode_tok_s),
            match (
                r.judge_s_per_response,
                r.judge_tokens_per_response,
                r.judge_parsed,
            ) {
                (Some(s), Some(t), Some((p, n))) => {
                    format!("{s:.2} ({t:.0} tok; Score parsed {p}/{n})")
                }
                _ => "-".into(),
            },
            format!(
                "{:.3} ({})",
                r.digit_judge_s_per_response,
                r.digit_scores
                    .iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ]);
    }
    writeln!(ctx.out, "{table}")?;
    Ok(())
}
