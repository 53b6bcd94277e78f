//! `srlm bench server`: the server backend beside the in-process engine on the same prompts:
//! generated tokens/s at several concurrencies, sampled- and digit-judge seconds per response,
//! and the client's own CPU time as a share of the wall time.
use std::path::PathBuf;
use std::time::Instant;

use comfy_table::Table;

use super::bench_util::cpu_seconds;
use super::Ctx;
use crate::backend::local::Local;
use crate::backend::server::{Server, ServerOptions, ServerTarget};
use crate::backend::{collect, Backend, ChatRequest, JudgeRequest};
use crate::engine::generate::SamplingParams;
use crate::engine::model::resolve_model;

/// Generated tokens/s at concurrency 1, 4 and 8 on a server, sampled- and digit-judge seconds
/// per response, and the client's CPU share, beside the in-process engine on the same prompts.
///
/// Example: `srlm bench server --server http://127.0.0.1:8080/v1 --prompts 64 --n 4`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's base URL (ending in `/v1`).
    #[arg(long, value_name = "URL")]
    pub server: String,
    #[arg(long, value_name = "NAME")]
    pub server_model: Option<String>,
    /// The same model for the in-process engine (default: the default GGUF).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Prompts (the built-in seed instructions, cycled).
    #[arg(long, default_value_t = 64)]
    pub prompts: usize,
    /// Candidates per prompt.
    #[arg(long, default_value_t = 4)]
    pub n: usize,
    /// Tokens per candidate at most.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Concurrencies to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub concurrency: Vec<usize>,
    /// Responses judged per judge measurement.
    #[arg(long, default_value_t = 8)]
    pub judge_responses: usize,
    /// Skip the in-process engine.
    #[arg(long)]
    pub no_local: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    backend: String,
    concurrency: Option<usize>,
    generated_tokens: u64,
    wall_s: f64,
    tokens_per_s: f64,
    /// The client process's CPU seconds over the wall time (servers only).
    client_cpu_share: Option<f64>,
    sampled_judge_s_per_response: Option<f64>,
    digit_judge_s_per_response: Option<f64>,
}

fn requests(args: &Args) -> Vec<ChatRequest> {
    let seeds: Vec<String> = crate::stages::import::BUILTIN_IFT
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["prompt"].as_str().map(str::to_string))
        .collect();
    (0..args.prompts)
        .map(|i| ChatRequest {
            user: seeds[i % seeds.len()].clone(),
            n: args.n,
            sampling: SamplingParams {
                max_tokens: args.max_tokens,
                seed: i as u64,
                ..SamplingParams::default()
            },
        })
        .collect()
}

fn judge_items(args: &Args) -> Vec<JudgeRequest> {
    let reqs = requests(args);
    (0..args.judge_responses)
        .map(|i| JudgeRequest {
            instruction: reqs[i % reqs.len()].user.clone(),
            response: "I am not sure, but I think it depends on the details.".into(),
        })
        .collect()
}

/// Generation over `reqs` and the two judges on `b`.
fn measure(
    b: &dyn Backend,
    args: &Args,
    reqs: &[ChatRequest],
    judge: bool,
) -> anyhow::Result<(u64, f64, Option<f64>, Option<f64>)> {
    let t0 = Instant::now();
    let gens = collect(reqs.len(), |done| b.chat(reqs, done))
        .map_err(|(i, e)| anyhow::anyhow!("request {i}: {e}"))?;
    let wall = t0.elapsed().as_secs_f64();
    let tokens: u64 = gens.iter().flatten().map(|g| g.tokens as u64).sum();
    if !judge {
        return Ok((tokens, wall, None, None));
    }
    let items = judge_items(args);
    let sampling = SamplingParams {
        max_tokens: args.max_tokens,
        ..SamplingParams::default()
    };
    let t = Instant::now();
    collect(items.len(), |done| b.judge(&items, 3, &sampling, done))
        .map_err(|(i, e)| anyhow::anyhow!("judge {i}: {e}"))?;
    let sampled = t.elapsed().as_secs_f64() / items.len().max(1) as f64;
    let t = Instant::now();
    collect(items.len(), |done| b.digits(&items, &sampling, done))
        .map_err(|(i, e)| anyhow::anyhow!("digit judge {i}: {e}"))?;
    let digits = t.elapsed().as_secs_f64() / items.len().max(1) as f64;
    Ok((tokens, wall, Some(sampled), Some(digits)))
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let reqs = requests(&args);
    let target = ServerTarget::new(&args.server, args.server_model.clone())?;
    let mut rows = Vec::new();
    let last = args.concurrency.iter().copied().max().unwrap_or(1);
    for &c in &args.concurrency {
        let options = ServerOptions {
            concurrency: c.max(1),
            ..ServerOptions::default()
        };
        let server = Server::connect(&target, &options)?;
        let cpu0 = cpu_seconds().unwrap_or(0.0);
        let (tokens, wall, sampled, digits) = measure(&server, &args, &reqs, c == last)?;
        let cpu = cpu_seconds().unwrap_or(0.0) - cpu0;
        rows.push(Row {
            backend: format!("server {}", server.model()),
            concurrency: Some(c),
            generated_tokens: tokens,
            wall_s: wall,
            tokens_per_s: tokens as f64 / wall.max(1e-9),
            client_cpu_share: Some(cpu / wall.max(1e-9)),
            sampled_judge_s_per_response: sampled,
            digit_judge_s_per_response: digits,
        });
    }
    if !args.no_local {
        let path = resolve_model(args.model.as_deref().map(|p| ctx.cwd.join(p)).as_deref())?;
        let local = Local::open(&path)?;
        let (tokens, wall, sampled, digits) = measure(&local, &args, &reqs, true)?;
        rows.push(Row {
            backend: format!("in-process {}", local.model().weights),
            concurrency: None,
            generated_tokens: tokens,
            wall_s: wall,
            tokens_per_s: tokens as f64 / wall.max(1e-9),
            client_cpu_share: None,
            sampled_judge_s_per_response: sampled,
            digit_judge_s_per_response: digits,
        });
    }
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    writeln!(
        ctx.out,
        "{} prompts x {} candidates, at most {} tokens each",
        args.prompts, args.n, args.max_tokens
    )?;
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "backend",
        "concurrency",
        "tokens",
        "wall s",
        "tok/s",
        "client CPU",
        "judge s/resp",
        "digits s/resp",
    ]);
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    for r in &rows {
        t.add_row(vec![
            r.backend.clone(),
            r.concurrency
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            r.generated_tokens.to_string(),
            format!("{:.1}", r.wall_s),
            format!("{:.1}", r.tokens_per_s),
            opt(r.client_cpu_share, &|v| format!("{:.2}%", v * 100.0)),
            opt(r.sampled_judge_s_per_response, &|v| format!("{v:.2}")),
            opt(r.digit_judge_s_per_response, &|v| format!("{v:.2}")),
        ]);
    }
    writeln!(ctx.out, "{t}")?;
    Ok(())
}
