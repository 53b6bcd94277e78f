//! `srlm bench diff`: the keyed diff of two versions of a 100k-pair AIFT file (10% of rows
//! removed, 10% modified, 10% added), from files and from commits, with time and peak memory.
//! Each measured diff runs in a fresh child process (`srlm bench diff --child ...`) so its peak
//! resident memory (VmHWM) is its own, not the generator's.
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bench_util::{cpu_seconds, peak_rss};
use super::Ctx;
use crate::dataset::engine::DiffOptions;

/// Keyed diff of two versions of a 100k-pair AIFT file, from files and from commits.
///
/// Generates two versions of a synthetic AIFT file (about 2.7 KB per pair, 270 MB for 100k
/// pairs; the second version has 10% of the rows removed, 10% modified, 10% added), commits
/// both in a fresh store, then diffs them from the files and from the commits (cold: the row
/// record cache is built; warm: it is reused), each in a fresh process, and prints wall time
/// and peak resident memory (VmHWM).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pairs in the first version.
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    /// Work directory (kept); default: a temporary directory (removed).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Internal: run one measured diff in this process and print its figures.
    #[arg(long, hide = true, num_args = 3, value_names = ["MODE", "A", "B"])]
    pub child: Option<Vec<String>>,
}

const WORDS: &[&str] = &[
    "the",
    "model",
    "answer",
    "prompt",
    "reward",
    "judge",
    "score",
    "training",
    "language",
    "response",
    "iteration",
    "preference",
    "pair",
    "quality",
    "helpful",
    "harmless",
    "detailed",
    "example",
    "data",
    "instruction",
    "follow",
    "explain",
    "because",
    "therefore",
    "however",
    "first",
    "second",
    "finally",
    "step",
    "result",
    "and",
    "of",
    "to",
    "in",
    "is",
    "a",
    "that",
    "with",
    "for",
    "this",
    "clear",
    "concise",
    "relevant",
    "accurate",
    "user",
    "question",
    "information",
    "provide",
    "improve",
    "loop",
];

fn text(rng: &mut ChaCha8Rng, lo: usize, hi: usize) -> String {
    let chars = rng.gen_range(lo..hi);
    let mut s = String::with_capacity(chars + 16);
    while s.len() < chars {
        if !s.is_empty() {
            s.push(if rng.gen_ratio(1, 12) { '\n' } else { ' ' });
        }
        s.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
    }
    s
}

fn pair(rng: &mut ChaCha8Rng, id: usize) -> serde_json::Value {
    let prompt = format!("Task {id}: {}", text(rng, 150, 450));
    let chosen = text(rng, 1000, 2000);
    let rejected = text(rng, 500, 1300);
    serde_json::json!({
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "score_chosen": rng.gen_range(3..=5),
        "score_rejected": rng.gen_range(0..=3),
    })
}

fn write_line(w: &mut impl Write, v: &serde_json::Value) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *w, v)?;
    w.write_all(b"\n")?;
    Ok(())
}

/// Write version A (`rows` pairs) and version B (every 10th row removed, the next one's
/// `chosen` edited, `rows / 10` new pairs appended).
pub fn generate(dir: &Path, rows: usize) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (pa, pb) = (dir.join("a/aift.jsonl"), dir.join("b/aift.jsonl"));
    for p in [&pa, &pb] {
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    }
    let mut a = BufWriter::new(std::fs::File::create(&pa)?);
    let mut b = BufWriter::new(std::fs::File::create(&pb)?);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for i in 0..rows {
        let mut row = pair(&mut rng, i);
        write_line(&mut a, &row)?;
        match i % 10 {
            0 => {}
            1 => {
                let c = format!(
                    "{} Edited in the second iteration.",
                    row["chosen"].as_str().unwrap_or_default()
                );
                row["chosen"] = c.into();
                write_line(&mut b, &row)?;
            }
            _ => write_line(&mut b, &row)?,
        }
    }
    for i in 0..rows / 10 {
        write_line(&mut b, &pair(&mut rng, rows + i))?;
    }
    a.flush()?;
    b.flush()?;
    Ok((pa, pb))
}

fn child(mode: &str, a: &str, b: &str, ctx: &mut Ctx) -> anyhow::Result<()> {
    let opts = DiffOptions::default();
    let (t, cpu0) = (Instant::now(), cpu_seconds().unwrap_or(0.0));
    let report = match mode {
        "files" => {
            crate::dataset::files::diff_paths((Path::new(a), a), (Path::new(b), b), &opts, false)?
        }
        "commits" => {
            let store = srlm_store::Store::discover(&ctx.cwd)?;
            crate::dataset::committed::diff_revisions(&store, a, b, &[], &opts, false)?
        }
        other => anyhow::bail!("unknown child mode {other}"),
    };
    let secs = t.elapsed().as_secs_f64();
    let s = report
        .datasets
        .first()
        .map(|d| d.diff.summary)
        .unwrap_or_default();
    let doc = serde_json::json!({
        "seconds": secs,
        "cpu_seconds": cpu_seconds().map(|c| c - cpu0),
        "peak_rss": peak_rss(),
        "added": s.added, "removed": s.removed, "modified": s.modified, "unchanged": s.unchanged,
    });
    writeln!(ctx.out, "{doc}")?;
    Ok(())
}

fn measure(mode: &str, a: &Path, b: &Path, cwd: &Path) -> anyhow::Result<serde_json::Value> {
    let exe = std::env::current_exe().context("finding the srlm executable")?;
    let out = Command::new(exe)
        .current_dir(cwd)
        .args(["bench", "diff", "--child", mode])
        .arg(a)
        .arg(b)
        .output()
        .context("running the measured diff")?;
    anyhow::ensure!(
        out.status.success(),
        "measured diff failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn report_line(ctx: &mut Ctx, what: &str, m: &serde_json::Value) -> anyhow::Result<()> {
    let mb = m["peak_rss"]
        .as_f64()
        .map(|b| format!("{:.0} MB", b / 1e6))
        .unwrap_or_else(|| "n/a".into());
    writeln!(
        ctx.out,
        "{what:<28} {:>6.2} s (cpu {:>5.2} s)  peak {mb:>6}  +{} -{} ~{} ={}",
        m["seconds"].as_f64().unwrap_or(f64::NAN),
        m["cpu_seconds"].as_f64().unwrap_or(f64::NAN),
        m["added"],
        m["removed"],
        m["modified"],
        m["unchanged"]
    )?;
    Ok(())
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    if let Some(c) = &args.child {
        return child(&c[0], &c[1], &c[2], ctx);
    }
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    // The store first: reopened later, after the generator has run.
    let repo = dir.join("repo");
    drop(srlm_store::Store::init(&repo)?);
    let t = Instant::now();
    let (pa, pb) = generate(&dir, args.rows)?;
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0)
    };
    writeln!(
        ctx.out,
        "generated {} pairs: a {:.0} MB, b {:.0} MB in {:.1} s",
        args.rows,
        size(&pa),
        size(&pb),
        t.elapsed().as_secs_f64()
    )?;
    let m = measure("files", &pa, &pb, &dir)?;
    report_line(ctx, "diff --files", &m)?;

    // Commit both versions in a fresh store.
    let t = Instant::now();
    let ((c1, _), (c2, m2)) = {
        let mut store = srlm_store::Store::open(&repo)?;
        let mut commit = |src: &Path, msg: &str| -> anyhow::Result<(String, String)> {
            std::fs::rename(src, repo.join("aift.jsonl"))?;
            let added = store.add(&repo, &[PathBuf::from("aift.jsonl")])?;
            let manifest = added
                .added
                .first()
                .map(|f| f.entry.id.to_hex())
                .unwrap_or_default();
            let id = store.commit(&srlm_store::CommitOptions {
                message: msg.into(),
                ..Default::default()
            })?;
            Ok((id.to_hex(), manifest))
        };
        (commit(&pa, "AIFT(M1)")?, commit(&pb, "AIFT(M2)")?)
    };
    writeln!(
        ctx.out,
        "committed both versions in {:.1} s",
        t.elapsed().as_secs_f64()
    )?;
    let (ra, rb) = (Path::new(&c1), Path::new(&c2));
    let cache = repo.join(".srlm/cache/diff");
    let _ = std::fs::remove_dir_all(&cache);
    report_line(
        ctx,
        "diff commits, no cache",
        &measure("commits", ra, rb, &repo)?,
    )?;
    // Three runs: the first after the cache was written, then steady state.
    for run in 1..=3 {
        let what = format!("diff commits, cached ({run})");
        report_line(ctx, &what, &measure("commits", ra, rb, &repo)?)?;
    }
    // The usual case after an iteration: the previous version's records are cached (from the
    // last diff), the new version's are not.
    for e in std::fs::read_dir(&cache)? {
        let p = e?.path();
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&m2))
        {
            std::fs::remove_file(&p)?;
        }
    }
    report_line(
        ctx,
        "diff commits, only a cached",
        &measure("commits", ra, rb, &repo)?,
    )?;
    Ok(())
}
