//! `srlm bench engine`: prefill tokens/s, decode tokens/s per batch size, generation
//! throughput prompt by prompt and continuously batched, and judge seconds per response, for
//! each way of holding the weights; llama.cpp's prefill beside srlm's when llama-cpp-python is
//! at hand ([`super::bench_llama`]).
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;

use super::bench_llama::{find_python, Peer};
use super::Ctx;
use crate::engine::batch::{generate_all, Job};
use crate::engine::generate::{Generation, SamplingParams};
use crate::engine::judge::{Judge, JudgeParams};
use crate::engine::model::{load, resolve_model, KvCache, Model, Step, WeightMode};

/// Prefill / decode tokens per second and judge seconds per response on the default model.
///
/// For each weight mode: prefill tokens/s on a judge prompt, decode tokens/s for each batch
/// size (sequences with their own caches, one ragged pass per step), generation of P prompts ×
/// N candidates prompt by prompt and continuously batched, sampled judging (k samples) and
/// digit-probability judging, in seconds per response. Threads: rayon's pool
/// (RAYON_NUM_THREADS, else all cores). With llama-cpp-python at hand, llama.cpp's prefill of
/// the same token ids on the same GGUF (re-quantized by llama.cpp for a re-quantized mode) and
/// threads, its runs alternating with srlm's.
///
/// Example: `srlm bench engine --prefill-only --prefill-tokens 512 --reps 5`
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
    /// Batch sizes for the decode measurement, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32")]
    pub batch: Vec<usize>,
    /// Prompts for the generation measurement (0 skips it): built-in instructions, `--n`
    /// sampled candidates each of up to `--tokens` tokens, first one prompt at a time (its
    /// candidates as one batch, as srlm decoded before continuous batching), then with each
    /// `--batch` size above 1 as the most sequences in flight.
    #[arg(long, default_value_t = 8)]
    pub gen_prompts: usize,
    /// Candidates per prompt in the generation measurement.
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
    /// Prompt length of the prefill figure: the judge prompt's tokens, cycled or cut
    /// (default: the judge prompt as it is, about 490 tokens).
    #[arg(long, value_name = "N")]
    pub prefill_tokens: Option<usize>,
    /// Timed prefills per weight mode (the median is reported), alternating with llama.cpp's.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Only the prefill figure: skip decoding, generation and judging.
    #[arg(long)]
    pub prefill_only: bool,
    /// A Python with llama-cpp-python, for llama.cpp's prefill beside srlm's (default:
    /// $SRLM_LLAMA_SERVER_PYTHON, else ~/.cache/srlm/llama-server-venv/bin/python if present).
    #[arg(long, value_name = "PATH")]
    pub llama_python: Option<PathBuf>,
    /// Leave llama.cpp out even where it is found.
    #[arg(long)]
    pub no_llama: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    weights: String,
    load_s: f64,
    prompt_tokens: usize,
    /// The median of `prefill_runs_tok_s`.
    prefill_tok_s: f64,
    prefill_runs_tok_s: Vec<f64>,
    /// llama.cpp on the same token ids, GGUF (held as this row's mode) and threads.
    llama_prefill_tok_s: Option<f64>,
    llama_prefill_runs_tok_s: Vec<f64>,
    /// llama-cpp-python's version, when it ran.
    llama_version: Option<String>,
    /// (batch size, total decode tokens/s).
    decode_tok_s: Vec<(usize, f64)>,
    /// Generation throughput: (most sequences in flight, 0 = one prompt at a time, total
    /// generated tokens/s), with the tokens generated; the outputs are checked identical.
    generate_tok_s: Vec<(usize, f64)>,
    generated_tokens: usize,
    judge_s_per_response: Option<f64>,
    judge_tokens_per_response: Option<f64>,
    /// Sampled judgements with a parseable `Score: N`, and how many were sampled.
    judge_parsed: Option<(usize, usize)>,
    digit_judge_s_per_response: Option<f64>,
    /// Expected digit score of each built-in pair (good, poor, "Huh?", off-topic).
    digit_scores: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
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

/// Greedy decode of `steps` tokens for `n` sequences, each with its own fork of a shared
/// prefill, one ragged pass per step (stops ignored).
fn decode(
    model: &Model,
    cache: &KvCache,
    first: u32,
    steps: usize,
    n: usize,
) -> anyhow::Result<f64> {
    let mut caches = (0..n)
        .map(|_| cache.fork(steps + 1))
        .collect::<Result<Vec<_>, _>>()?;
    let mut toks = vec![first; n];
    let v = model.config.vocab_size;
    let t0 = Instant::now();
    for _ in 0..steps {
        let mut rows: Vec<Step> = caches
            .iter_mut()
            .zip(&toks)
            .map(|(cache, t)| Step {
                cache,
                tokens: std::slice::from_ref(t),
            })
            .collect();
        let logits = model.forward_ragged(&mut rows)?;
        for (t, row) in toks.iter_mut().zip(logits.chunks_exact(v)) {
            let mut best = 0;
            for (i, l) in row.iter().enumerate() {
                if *l > row[best] {
                    best = i;
                }
            }
            *t = best as u32;
        }
    }
    Ok((steps * n) as f64 / t0.elapsed().as_secs_f64())
}

const GEN_PROMPTS: [&str; 8] = [
    "Write a short poem about the sea.",
    "What is the capital of France?",
    "Explain how a bicycle stays upright.",
    "Give me three tips for learning a language.",
    "What is 17 times 23?",
    "Describe a cat to someone who has never seen one.",
    "Why is the sky blue?",
    "Suggest a name for a bakery.",
];

/// Generated tokens/s of `prompts` × `n` candidates: one prompt at a time, then continuously
/// batched with each batch size; fails if any run's output differs from the first.
fn generation(model: &Model, args: &Args) -> anyhow::Result<(Vec<(usize, f64)>, usize)> {
    let params = SamplingParams {
        max_tokens: args.tokens,
        seed: 1,
        ..SamplingParams::default()
    };
    let jobs = (0..args.gen_prompts)
        .map(|i| {
            Ok(Job {
                text: model.prompt(GEN_PROMPTS[i % GEN_PROMPTS.len()])?,
                n: args.n,
                params: &params,
                prefix: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tokens = |g: &[Vec<Generation>]| g.iter().flatten().map(|c| c.tokens).sum::<usize>();
    let t0 = Instant::now();
    let mut want = Vec::new();
    for j in &jobs {
        want.extend(generate_all(
            model,
            std::slice::from_ref(j),
            args.n,
            &mut |_| {},
        )?);
    }
    let total = tokens(&want);
    let mut out = vec![(0, total as f64 / t0.elapsed().as_secs_f64())];
    for &b in args.batch.iter().filter(|&&b| b > 1) {
        let t0 = Instant::now();
        let got = generate_all(model, &jobs, b, &mut |_| {})?;
        out.push((b, total as f64 / t0.elapsed().as_secs_f64()));
        anyhow::ensure!(
            got == want,
            "batch {b}: output differs from one prompt at a time"
        );
    }
    Ok((out, total))
}

/// One timed prefill of `ids` into a fresh cache: tokens/s, the cache and the last logits.
fn prefill(model: &Model, ids: &[u32]) -> anyhow::Result<(f64, KvCache, Tensor)> {
    let t = Tensor::new(ids, model.device())?.unsqueeze(0)?;
    let mut cache = KvCache::new(model);
    let t0 = Instant::now();
    let logits = model.forward(&t, &mut cache)?;
    Ok((ids.len() as f64 / t0.elapsed().as_secs_f64(), cache, logits))
}

fn measure(
    args: &Args,
    path: &Path,
    mode: WeightMode,
    llama: Option<&Path>,
    ctx: &mut Ctx,
) -> anyhow::Result<Row> {
    let t0 = Instant::now();
    let model = load(path, mode)?;
    let load_s = t0.elapsed().as_secs_f64();
    let judge = Judge::new(&model)?;
    let text = judge.text(INSTRUCTION, RESPONSE)?;
    let mut ids = model.encode(&text)?;
    if let Some(n) = args.prefill_tokens {
        ids = ids.iter().copied().cycle().take(n.max(1)).collect();
    }
    // Warm up (thread pool, allocations) on a short input.
    let warm = Tensor::new(&ids[..8.min(ids.len())], model.device())?.unsqueeze(0)?;
    model.forward(&warm, &mut KvCache::new(&model))?;

    let threads = rayon::current_num_threads();
    let mut peer = match llama {
        Some(python) => match Peer::start(python, path, mode, threads, &ids) {
            Ok(p) => Some(p),
            Err(e) => {
                writeln!(ctx.err, "llama.cpp left out: {e:#}")?;
                None
            }
        },
        None => None,
    };
    let (mut runs, mut peer_runs) = (Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..args.reps.max(1) {
        let (tok_s, cache, logits) = prefill(&model, &ids)?;
        runs.push(tok_s);
        last = Some((cache, logits));
        if let Some(p) = peer.as_mut() {
            peer_runs.push(ids.len() as f64 / p.prefill()?);
        }
    }
    let llama_version = peer.as_ref().map(|p| p.version.clone());
    drop(peer);
    let (cache, logits) = last.expect("at least one prefill");
    let first: u32 = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?[0];

    let decode_tok_s = if args.prefill_only {
        Vec::new()
    } else {
        args.batch
            .iter()
            .map(|&b| Ok((b, decode(&model, &cache, first, args.tokens, b.max(1))?)))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let (generate_tok_s, generated_tokens) = if args.gen_prompts > 0 && !args.prefill_only {
        generation(&model, args)?
    } else {
        (Vec::new(), 0)
    };

    let (judge_s, judge_tokens, judge_parsed) = if args.no_judge || args.prefill_only {
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
        // All responses judged as one continuous batch, as the judge stage does.
        let items: Vec<(String, String)> = (0..args.responses)
            .map(|i| {
                let (ins, resp) = PAIRS[i % PAIRS.len()];
                (ins.to_string(), resp.to_string())
            })
            .collect();
        for j in judge.judge_all(&items, &params, &mut |_, _| {})? {
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
    let (digit_scores, digit) = if args.prefill_only {
        (Vec::new(), None)
    } else {
        let t0 = Instant::now();
        let mut digit_scores = vec![0.0; PAIRS.len()];
        let mut failed = None;
        judge.digit_scores(&PAIRS, PAIRS.len(), &mut |i, r| match r {
            Ok(d) => digit_scores[i] = d.expected,
            Err(e) => failed = Some(e),
        });
        if let Some(e) = failed {
            return Err(e.into());
        }
        (
            digit_scores,
            Some(t0.elapsed().as_secs_f64() / PAIRS.len() as f64),
        )
    };
    Ok(Row {
        weights: model.weights.clone(),
        load_s,
        prompt_tokens: ids.len(),
        prefill_tok_s: median(&runs),
        prefill_runs_tok_s: runs,
        llama_prefill_tok_s: (!peer_runs.is_empty()).then(|| median(&peer_runs)),
        llama_prefill_runs_tok_s: peer_runs,
        llama_version,
        decode_tok_s,
        generate_tok_s,
        generated_tokens,
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
    let llama = if args.no_llama {
        None
    } else {
        find_python(
            args.llama_python
                .as_deref()
                .map(|p| ctx.cwd.join(p))
                .as_deref(),
        )
    };
    let mut rows = Vec::new();
    for &mode in &args.weights {
        if !ctx.quiet {
            writeln!(ctx.err, "measuring {mode:?} ...")?;
        }
        rows.push(measure(&args, &path, mode, llama.as_deref(), ctx)?);
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
        format!("prefill tok/s (median of {})", args.reps.max(1)),
        "llama.cpp prefill tok/s".into(),
        format!("decode tok/s (batch {})", join(&args.batch)),
        format!(
            "generate {}×{} tok/s (prompt at a time; max batch {})",
            args.gen_prompts,
            args.n,
            join(
                &args.batch[..]
                    .iter()
                    .copied()
                    .filter(|&b| b > 1)
                    .collect::<Vec<_>>()
            )
        ),
        format!("judge s/resp (k={})", args.samples),
        "digit judge s/resp (scores: good, poor, Huh?, off-topic)".into(),
    ]);
    for r in &rows {
        table.add_row(vec![
            r.weights.clone(),
            format!("{:.2}", r.load_s),
            format!("{:.0} ({} tok)", r.prefill_tok_s, r.prompt_tokens),
            match (r.llama_prefill_tok_s, &r.llama_version) {
                (Some(t), Some(v)) => format!("{t:.0} (llama-cpp-python {v})"),
                _ => "-".into(),
            },
            r.decode_tok_s
                .iter()
                .map(|(_, t)| format!("{t:.1}"))
                .collect::<Vec<_>>()
                .join(" / "),
            if r.generate_tok_s.is_empty() {
                "-".into()
            } else {
                format!(
                    "{} ({} tok, same output)",
                    r.generate_tok_s
                        .iter()
                        .map(|(_, t)| format!("{t:.1}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    r.generated_tokens
                )
            },
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
            match r.digit_judge_s_per_response {
                Some(s) => format!(
                    "{s:.3} ({})",
                    r.digit_scores
                        .iter()
                        .map(|x| format!("{x:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "-".into(),
            },
        ]);
    }
    writeln!(ctx.out, "{table}")?;
    Ok(())
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
