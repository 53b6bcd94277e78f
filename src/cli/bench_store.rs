//! `srlm bench store`.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};

use super::add::human_bytes;
use super::Ctx;

/// Measure the store against the floor, in one run: generate a binary file (540 MB) and a JSONL
/// file of preference pairs (100k rows), then for each print the floor (BLAKE3 of the file, with
/// `b3sum` if installed, else the blake3 crate; and a durable copy: copy + fsync), `srlm add` +
/// `srlm commit` time, the time of re-adding it unchanged, and the bytes the store grew by. Each
/// srlm step runs as its own `srlm` process, as a user would run it.
///
/// Example: `srlm bench store --dir /tmp`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to work in (a fresh subdirectory is made and removed; default: system temp).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Size of the binary file in MB (10^6 bytes).
    #[arg(long, default_value_t = 540)]
    pub size_mb: u64,
    /// Number of preference pairs in the JSONL file.
    #[arg(long, default_value_t = 100_000)]
    pub rows: u64,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Figures {
    file: String,
    bytes: u64,
    b3sum_s: f64,
    b3sum_tool: String,
    copy_fsync_s: f64,
    floor_s: f64,
    add_commit_s: f64,
    ratio_to_floor: f64,
    readd_unchanged_ms: f64,
    store_bytes: u64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn srlm_step(dir: &Path, args: &[&str]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .arg("-q")
        .args(args)
        .current_dir(dir)
        .output()?;
    let el = t.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "srlm {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(el)
}

/// BLAKE3 of a file: the `b3sum` binary (multi-threaded) if present, else the blake3 crate.
fn b3sum(path: &Path) -> anyhow::Result<(Duration, String)> {
    let t = Instant::now();
    if let Ok(out) = Command::new("b3sum").arg(path).output() {
        if out.status.success() {
            return Ok((t.elapsed(), "b3sum".into()));
        }
    }
    let t = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    std::hint::black_box(h.finalize());
    Ok((t.elapsed(), "blake3 crate".into()))
}

fn copy_fsync(path: &Path, dest: &Path) -> anyhow::Result<Duration> {
    let t = Instant::now();
    std::fs::copy(path, dest)?;
    std::fs::File::open(dest)?.sync_all()?;
    let el = t.elapsed();
    std::fs::remove_file(dest)?;
    Ok(el)
}

fn store_size(dir: &Path) -> u64 {
    fn du(p: &Path) -> u64 {
        match std::fs::symlink_metadata(p) {
            Ok(md) if md.is_dir() => std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
                .unwrap_or(0),
            Ok(md) => md.len(),
            Err(_) => 0,
        }
    }
    du(&dir.join(".srlm"))
}

fn measure(work: &Path, name: &str) -> anyhow::Result<Figures> {
    let path = work.join(name);
    let bytes = std::fs::metadata(&path)?.len();
    let (b3, tool) = b3sum(&path)?;
    let cp = copy_fsync(&path, &work.join(".bench-copy"))?;
    let before = store_size(work);
    let add = srlm_step(work, &["add", name])?;
    let commit = srlm_step(work, &["commit", "-m", name])?;
    let store_bytes = store_size(work) - before;
    let readd = srlm_step(work, &["add", name])?;
    let floor = secs(b3) + secs(cp);
    let add_commit = secs(add) + secs(commit);
    Ok(Figures {
        file: name.into(),
        bytes,
        b3sum_s: secs(b3),
        b3sum_tool: tool,
        copy_fsync_s: secs(cp),
        floor_s: floor,
        add_commit_s: add_commit,
        ratio_to_floor: add_commit / floor,
        readd_unchanged_ms: secs(readd) * 1000.0,
        store_bytes,
    })
}

fn generate(work: &Path, size: u64, rows: u64) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(540);
    let mut f = std::io::BufWriter::new(std::fs::File::create(work.join("model.safetensors"))?);
    let mut block = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        rng.fill_bytes(&mut block[..n]);
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.into_inner()?.sync_all()?;
    const WORDS: [&str; 16] = [
        "the", "model", "answer", "explain", "why", "reward", "judge", "score", "helpful",
        "response", "prompt", "step", "first", "because", "data", "train",
    ];
    let mut f = std::io::BufWriter::new(std::fs::File::create(work.join("pairs.jsonl"))?);
    let text = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| {
        (0..n)
            .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    for i in 0..rows {
        let row = serde_json::json!({
            "prompt": format!("{i}: {}", text(&mut rng, 12)),
            "chosen": text(&mut rng, 60),
            "rejected": text(&mut rng, 40),
            "score_chosen": rng.gen_range(3..=5),
            "score_rejected": rng.gen_range(0..=2),
        });
        writeln!(f, "{row}")?;
    }
    f.into_inner()?.sync_all()?;
    Ok(())
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("srlm-bench-store-")
        .tempdir_in(&parent)?;
    let work = tmp.path();
    if !ctx.quiet {
        writeln!(
            ctx.err,
            "generating {} MB and {} pairs in {}",
            args.size_mb,
            args.rows,
            work.display()
        )?;
    }
    generate(work, args.size_mb * 1_000_000, args.rows)?;
    srlm_step(work, &["init"])?;
    let figs = vec![
        measure(work, "model.safetensors")?,
        measure(work, "pairs.jsonl")?,
    ];
    if args.json {
        writeln!(ctx.out, "{}", serde_json::to_string(&figs)?)?;
        return Ok(());
    }
    let mut t = comfy_table::Table::new();
    t.set_header([
        "file",
        "size",
        "b3sum s",
        "copy+fsync s",
        "floor s",
        "add+commit s",
        "x floor",
        "re-add ms",
        "store bytes",
    ]);
    for f in &figs {
        t.add_row([
            f.file.clone(),
            human_bytes(f.bytes),
            format!("{:.3}", f.b3sum_s),
            format!("{:.3}", f.copy_fsync_s),
            format!("{:.3}", f.floor_s),
            format!("{:.3}", f.add_commit_s),
            format!("{:.2}", f.ratio_to_floor),
            format!("{:.1}", f.readd_unchanged_ms),
            human_bytes(f.store_bytes),
        ]);
    }
    writeln!(ctx.out, "{t}")?;
    writeln!(
        ctx.out,
        "b3sum: {}; floor = b3sum + copy+fsync of the same file",
        figs[0].b3sum_tool
    )?;
    Ok(())
}
