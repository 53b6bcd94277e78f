//! `srlm init`.
use std::path::PathBuf;

use srlm_store::Store;

use super::Ctx;

/// Create a new srlm store (`.srlm/`) in a directory (default: the current one; created if
/// missing). The directory becomes the working directory whose files srlm tracks.
///
/// Example: `srlm init experiments/smollm2`
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to initialise.
    pub dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &mut Ctx) -> anyhow::Result<()> {
    let dir = ctx.cwd.join(args.dir.unwrap_or_else(|| PathBuf::from(".")));
    let store = Store::init(&dir)?;
    crate::hooks::install(&store.hooks_dir())?;
    if args.json {
        let v = serde_json::json!({"store": store.store_dir(), "workdir": store.workdir()});
        writeln!(ctx.out, "{v}")?;
    } else {
        writeln!(
            ctx.out,
            "Initialised an empty srlm store in {}",
            store.store_dir().display()
        )?;
    }
    Ok(())
}
