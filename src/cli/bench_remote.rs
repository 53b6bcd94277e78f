//! `srlm bench remote`: push a checkpoint, then a second version sharing 90% of its bytes, then
//! clone (full and lazy), beside the floor (one multipart PUT of the raw file through the same
//! client) and, when DVC is installed, `dvc push` of the same two files to the same bucket.
//! Then a store of 10 checkpoints is cloned lazily without checkout (metadata only). Prints
//! seconds and bytes for each step.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::{RngCore, SeedableRng};
use srlm_transfer::bucket::Bucket;
use srlm_transfer::RemoteConfig;

use super::Ctx;

/// Push / second push / clone / lazy clone of a checkpoint against a remote, beside a raw
/// multipart PUT of the same file (the floor). Uses a fresh prefix under URL each run.
///
/// Example: `srlm bench remote s3://srlm-bench --endpoint http://127.0.0.1:3900 --region garage`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Remote URL (a fresh `bench-<time>` prefix is made under it).
    pub url: String,
    /// S3 endpoint (else AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// S3 region (else AWS_REGION).
    #[arg(long)]
    pub region: Option<String>,
    /// Size of the checkpoint in MB (10^6 bytes).
    #[arg(long, default_value_t = 540)]
    pub size_mb: u64,
    /// Directory to work in (default: system temp).
    #[arg(long = "dir", value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The `dvc` executable to compare with (default: `dvc` on PATH; skipped when absent).
    #[arg(long, value_name = "PATH")]
    pub dvc: Option<PathBuf>,
    /// Checkpoints in the store that is cloned lazily (each a new version of the file).
    #[arg(long, default_value_t = 10)]
    pub checkpoints: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Step {
    step: String,
    seconds: f64,
    bytes_sent: u64,
    bytes_received: u64,
}

fn srlm_json(dir: &Path, args: &[&str]) -> anyhow::Result<(f64, serde_json::Value)> {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .arg("-q")
        .args(args)
        .current_dir(dir)
        .output()?;
    let el = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "srlm {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v = serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or_default();
    Ok((el, v))
}

fn step(name: &str, secs: f64, v: &serde_json::Value) -> Step {
    Step {
        step: name.into(),
        seconds: secs,
        bytes_sent: v["bytes_sent"].as_u64().unwrap_or(0),
        bytes_received: v["bytes_received"].as_u64().unwrap_or(0),
    }
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let parent = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("srlm-bench-remote-")
        .tempdir_in(&parent)?;
    let work = tmp.path();
    let size = (args.size_mb * 1_000_000) as usize;
    let mut data = vec![0u8; size];
    rand_chacha::ChaCha8Rng::seed_from_u64(540).fill_bytes(&mut data);
    let origin = work.join("origin");
    std::fs::create_dir_all(&origin)?;
    std::fs::write(origin.join("model.safetensors"), &data)?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let url = format!("{}/bench-{stamp}", args.url.trim_end_matches('/'));
    let cfg = RemoteConfig {
        url: url.clone(),
        endpoint: args.endpoint.clone(),
        region: args.region.clone(),
        lazy: false,
    };
    let mut steps = Vec::new();
    // the floor: the raw file in one multipart PUT through the same client
    // beside the remote, not in it (a remote holds only what srlm writes)
    let b = Bucket::open(&RemoteConfig {
        url: format!("{url}-floor"),
        ..cfg.clone()
    })?;
    let t = Instant::now();
    let n = b.put_files(
        &[(
            "floor/model.safetensors".into(),
            origin.join("model.safetensors"),
        )],
        &mut |_, _| {},
    )?;
    steps.push(Step {
        step: "floor: one multipart PUT of the file".into(),
        seconds: t.elapsed().as_secs_f64(),
        bytes_sent: n,
        bytes_received: 0,
    });
    srlm_json(&origin, &["init"])?;
    srlm_json(&origin, &["add", "model.safetensors"])?;
    srlm_json(&origin, &["commit", "-m", "v1"])?;
    let mut add = vec!["remote", "add", "bench", url.as_str()];
    if let Some(e) = &args.endpoint {
        add.extend(["--endpoint", e.as_str()]);
    }
    if let Some(r) = &args.region {
        add.extend(["--region", r.as_str()]);
    }
    srlm_json(&origin, &add)?;
    let (s, v) = srlm_json(&origin, &["push", "bench", "--json"])?;
    steps.push(step("push v1", s, &v));
    // v2: the last 10% of the bytes changed
    let tail = size / 10;
    rand_chacha::ChaCha8Rng::seed_from_u64(541).fill_bytes(&mut data[size - tail..]);
    std::fs::write(origin.join("model.safetensors"), &data)?;
    srlm_json(&origin, &["add", "model.safetensors"])?;
    srlm_json(&origin, &["commit", "-m", "v2"])?;
    let (s, v) = srlm_json(&origin, &["push", "bench", "--json"])?;
    steps.push(step("push v2 (90% shared)", s, &v));
    let mut clone = |name: &str, lazy: bool| -> anyhow::Result<()> {
        let mut a = vec!["clone", url.as_str(), name, "--json"];
        if lazy {
            a.push("--lazy");
        }
        if let Some(e) = &args.endpoint {
            a.extend(["--endpoint", e.as_str()]);
        }
        if let Some(r) = &args.region {
            a.extend(["--region", r.as_str()]);
        }
        let (s, v) = srlm_json(work, &a)?;
        steps.push(step(if lazy { "clone --lazy" } else { "clone" }, s, &v));
        Ok(())
    };
    clone("full", false)?;
    clone("lazy", true)?;
    drop(clone);
    // a store of `checkpoints` versions: a lazy clone without checkout moves metadata only
    for v in 2..args.checkpoints {
        let off = (v % 10) * tail;
        rand_chacha::ChaCha8Rng::seed_from_u64(540 + v as u64)
            .fill_bytes(&mut data[off..off + tail]);
        std::fs::write(origin.join("model.safetensors"), &data)?;
        srlm_json(&origin, &["add", "model.safetensors"])?;
        srlm_json(&origin, &["commit", "-m", &format!("v{}", v + 1)])?;
    }
    srlm_json(&origin, &["push", "bench", "--json"])?;
    let mut a = vec![
        "clone",
        url.as_str(),
        "meta",
        "--lazy",
        "--no-checkout",
        "--json",
    ];
    if let Some(e) = &args.endpoint {
        a.extend(["--endpoint", e.as_str()]);
    }
    if let Some(r) = &args.region {
        a.extend(["--region", r.as_str()]);
    }
    let (s, v) = srlm_json(work, &a)?;
    let name = format!(
        "clone --lazy --no-checkout ({} checkpoints)",
        args.checkpoints
    );
    steps.push(step(&name, s, &v));
    if let Some(dvc) = dvc_program(args.dvc.as_deref()) {
        dvc_steps(&dvc, work, &url, &args, size, &mut steps)?;
    }
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string(&steps)?)?;
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.set_header(["step", "seconds", "MB sent", "MB received"]);
    for s in &steps {
        t.add_row([
            s.step.clone(),
            format!("{:.2}", s.seconds),
            format!("{:.1}", s.bytes_sent as f64 / 1e6),
            format!("{:.1}", s.bytes_received as f64 / 1e6),
        ]);
    }
    writeln!(ctx.out, "{t}")?;
    writeln!(ctx.out, "remote: {url}")?;
    Ok(())
}

/// `dvc` to compare with: the one named, else the one on PATH, else none.
fn dvc_program(named: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = named {
        return Some(p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("dvc"))
            .find(|p| p.is_file())
    })
}

/// `dvc push` of the same two versions to a DVC remote beside srlm's (same bucket, same
/// endpoint); bytes sent are read from the bucket listing (DVC sends each changed file whole).
fn dvc_steps(
    dvc: &Path,
    work: &Path,
    url: &str,
    args: &Args,
    size: usize,
    steps: &mut Vec<Step>,
) -> anyhow::Result<()> {
    let dir = work.join("dvc");
    std::fs::create_dir_all(&dir)?;
    let remote_url = format!("{url}-dvc");
    let run = |a: &[&str]| -> anyhow::Result<f64> {
        let t = Instant::now();
        let o = Command::new(dvc).args(a).current_dir(&dir).output()?;
        anyhow::ensure!(
            o.status.success(),
            "dvc {} failed: {}{}",
            a.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(t.elapsed().as_secs_f64())
    };
    run(&["init", "--no-scm", "-q"])?;
    run(&["remote", "add", "-d", "bench", &remote_url])?;
    if let Some(e) = &args.endpoint {
        run(&["remote", "modify", "bench", "endpointurl", e])?;
    }
    if let Some(r) = &args.region {
        run(&["remote", "modify", "bench", "region", r])?;
    }
    let bucket = Bucket::open(&RemoteConfig {
        url: remote_url.clone(),
        endpoint: args.endpoint.clone(),
        region: args.region.clone(),
        lazy: false,
    })?;
    let held = |b: &Bucket| -> u64 {
        b.list("")
            .map(|l| l.iter().map(|x| x.size).sum())
            .unwrap_or(0)
    };
    let mut data = vec![0u8; size];
    rand_chacha::ChaCha8Rng::seed_from_u64(540).fill_bytes(&mut data);
    let tail = size / 10;
    for (i, label) in ["dvc push v1", "dvc push v2 (90% shared)"]
        .iter()
        .enumerate()
    {
        if i == 1 {
            rand_chacha::ChaCha8Rng::seed_from_u64(541).fill_bytes(&mut data[size - tail..]);
        }
        std::fs::write(dir.join("model.safetensors"), &data)?;
        run(&["add", "-q", "model.safetensors"])?;
        let before = held(&bucket);
        let secs = run(&["push", "-q", "-r", "bench"])?;
        steps.push(Step {
            step: (*label).into(),
            seconds: secs,
            bytes_sent: held(&bucket).saturating_sub(before),
            bytes_received: 0,
        });
    }
    Ok(())
}
