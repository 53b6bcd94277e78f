//! `srlm clone`.
use std::path::PathBuf;

use srlm_transfer::RemoteConfig;

use super::remote::{print_report, Meter};
use super::Ctx;

/// Make a new store from a remote: fetch everything (or, with `--lazy`, commits, trees,
/// manifests and run records, plus only the file bytes the checked-out branch needs; older
/// versions' bytes are fetched when a command needs them), add it as remote `origin`, and
/// check out `main` (or the remote's only branch).
///
/// Examples: `srlm clone s3://team-bucket/srlm work --endpoint http://127.0.0.1:3900`,
/// `srlm clone file:///mnt/shared/srlm copy --lazy`
#[derive(Debug, clap::Args)]
pub struct Args {
    pub url: String,
    /// Directory of the new store (default: the URL's last component). (Not named `dir`:
    /// that id is the global `-C DIR`.)
    #[arg(value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Fetch file bytes only when needed.
    #[arg(long)]
    pub lazy: bool,
    /// Set the branch but write no files (nor stage them: status shows them as staged
    /// deletions, as after `git clone --no-checkout`); with `--lazy` the clone then moves
    /// metadata only, and `srlm checkout --force main` fetches and writes the files later.
    #[arg(long)]
    pub no_checkout: bool,
    /// S3 endpoint (else AWS_ENDPOINT_URL), stored with the remote.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// S3 region (else AWS_REGION), stored with the remote.
    #[arg(long)]
    pub region: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let dir = match &args.target {
        Some(d) => ctx.cwd.join(d),
        None => {
            let last = args
                .url
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty() && !s.contains(':'))
                .unwrap_or("clone");
            ctx.cwd.join(last)
        }
    };
    if dir.join(".srlm").exists() {
        anyhow::bail!("{} is already an srlm store", dir.display());
    }
    let cfg = RemoteConfig {
        url: args.url.clone(),
        endpoint: args.endpoint.clone(),
        region: args.region.clone(),
        lazy: args.lazy,
    };
    // check the URL and reach the remote before creating anything
    srlm_transfer::location::Location::parse(&cfg.url)?;
    let mut m = Meter::new(ctx, args.json);
    let r = srlm_transfer::clone_into(&dir, cfg, args.lazy, !args.no_checkout, &mut |p| m.tick(p));
    m.finish();
    let (_store, rep) = match r {
        Ok(x) => x,
        Err(e) => {
            // a clone that failed leaves no half store behind (unless the folder held files)
            if dir.join(".srlm").exists() {
                let _ = std::fs::remove_dir_all(dir.join(".srlm"));
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e.into());
        }
    };
    print_report(
        ctx,
        &format!("clone into {}", dir.display()),
        &rep,
        args.json,
    )
}
