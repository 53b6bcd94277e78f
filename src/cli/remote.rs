//! `srlm remote add|list|remove`, and what the transfer verbs share: opening a remote by name
//! and a progress display with bytes per second.
use std::time::Instant;

use anyhow::Context;
use srlm_store::Store;
use srlm_transfer::{config, Progress, Remote, RemoteConfig, TransferReport};

use super::Ctx;

/// Manage remotes: object storage a store is pushed to and fetched from. URLs:
/// `s3://BUCKET[/PREFIX]` (S3 or S3-compatible, e.g. Garage or MinIO: give `--endpoint`),
/// `file:///PATH` (a directory on a shared disk), `gs://BUCKET`, `az://CONTAINER`. Credentials
/// come only from the standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`) and are never stored.
///
/// Examples: `srlm remote add origin s3://team-bucket/srlm --endpoint http://127.0.0.1:3900
/// --region garage`, `srlm remote list`, `srlm remote remove origin`
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Add a remote (nothing is contacted).
    Add {
        name: String,
        url: String,
        /// S3 endpoint, e.g. http://127.0.0.1:3900 (else AWS_ENDPOINT_URL, else AWS).
        #[arg(long)]
        endpoint: Option<String>,
        /// S3 region (else AWS_REGION).
        #[arg(long)]
        region: Option<String>,
    },
    /// List remotes.
    List {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a remote and its remote-tracking branches.
    Remove { name: String },
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    match args.cmd {
        Cmd::Add {
            name,
            url,
            endpoint,
            region,
        } => {
            let store = Store::discover(&ctx.cwd)?;
            let cfg = RemoteConfig {
                url: url.clone(),
                endpoint,
                region,
                lazy: false,
            };
            config::add(&store, &name, cfg)?;
            writeln!(ctx.out, "added remote {name} ({url})")?;
        }
        Cmd::List { json } => {
            let store = Store::discover_read(&ctx.cwd)?;
            let list = config::list(&store)?;
            if json {
                let m: serde_json::Map<String, serde_json::Value> = list
                    .into_iter()
                    .map(|(n, c)| (n, serde_json::to_value(c).expect("serialises")))
                    .collect();
                writeln!(ctx.out, "{}", serde_json::Value::Object(m))?;
            } else {
                for (n, c) in list {
                    let ep = c
                        .endpoint
                        .map(|e| format!(" (endpoint {e})"))
                        .unwrap_or_default();
                    writeln!(ctx.out, "{n}\t{}{ep}", c.url)?;
                }
            }
        }
        Cmd::Remove { name } => {
            let mut store = Store::discover(&ctx.cwd)?;
            config::remove(&mut store, &name)?;
            writeln!(ctx.out, "removed remote {name}")?;
        }
    }
    Ok(())
}

/// The remote `name` of `store` (default `origin`), opened.
pub fn open(store: &Store, name: Option<&str>) -> anyhow::Result<Remote> {
    let name = name.unwrap_or("origin");
    let cfg = config::get(store, name)?;
    Remote::open(name, &cfg).with_context(|| format!("remote {name}"))
}

/// A progress display on standard error (bytes so far and bytes/s), silent when `quiet`.
pub struct Meter {
    bar: Option<indicatif::ProgressBar>,
    start: Instant,
    bytes: u64,
}

impl Meter {
    pub fn new(ctx: &Ctx, quiet: bool) -> Meter {
        let bar = (!ctx.quiet && !quiet).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .expect("template parses"),
            );
            b
        });
        Meter {
            bar,
            start: Instant::now(),
            bytes: 0,
        }
    }

    pub fn tick(&mut self, p: Progress) {
        let (verb, key, n) = match p {
            Progress::Sent { key, bytes } => ("sent", key, bytes),
            Progress::Received { key, bytes } => ("received", key, bytes),
        };
        self.bytes += n;
        if let Some(b) = &self.bar {
            let rate = self.bytes as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
            b.set_message(format!(
                "{verb} {} ({}/s), last {key}",
                indicatif::HumanBytes(self.bytes),
                indicatif::HumanBytes(rate as u64)
            ));
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// A transfer report: JSON, or a summary line and the notes.
pub fn print_report(
    ctx: &mut Ctx,
    what: &str,
    rep: &TransferReport,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        writeln!(ctx.out, "{}", serde_json::to_string(rep)?)?;
        return Ok(());
    }
    for u in &rep.updated {
        let short = |v: &Option<String>| {
            v.as_deref()
                .map(|s| s[..12.min(s.len())].to_string())
                .unwrap_or_else(|| "(none)".into())
        };
        writeln!(
            ctx.out,
            "{}: {} -> {}",
            u.name,
            short(&u.old),
            short(&u.new)
        )?;
    }
    writeln!(
        ctx.out,
        "{what}: {} objects and {} packs sent ({}), {} objects and {} packs received ({}), {} \
         objects and {} pieces already there, {:.2}s",
        rep.objects_sent,
        rep.packs_sent,
        indicatif::HumanBytes(rep.bytes_sent),
        rep.objects_received,
        rep.packs_received,
        indicatif::HumanBytes(rep.bytes_received),
        rep.objects_skipped,
        rep.pieces_skipped,
        rep.seconds
    )?;
    for n in &rep.notes {
        writeln!(ctx.err, "note: {n}")?;
    }
    Ok(())
}
