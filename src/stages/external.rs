//! External commands as stages (`srlm run … -- CMD…`): a user's TRL script, a vLLM job, `sort`.
//!
//! The command line, the environment variables that shape it and the BLAKE3 of every file the
//! command line names (the user's scripts) are the run's parameters; the wrapper
//! ([`crate::stages::record`]) hashes the declared inputs before and the declared outputs after.
//! The command runs in the working directory with `SRLM_INPUT_<ROLE>` / `SRLM_OUTPUT_<ROLE>`
//! naming the files (role upper-cased, `-` and `.` as `_`). A replay runs the same command line
//! in the replay's scratch directory, with the inputs at their recorded paths and the recorded
//! code put back there ([`super::code`]: a checkout of the recorded git commit with the
//! recorded patch applied).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::record::{Metrics, StageFailure, StageIo};

/// The replay-registry name of external runs.
pub const REPLAY: &str = "external";

/// `srlm run`'s declaration: the stage name and roles are the user's; runs record
/// `replay: external`, which this replays.
pub static EXTERNAL: super::decl::StageDecl = super::decl::StageDecl {
    name: REPLAY,
    version: "1",
    inputs: &[],
    outputs: &[],
    defaults: super::decl::no_params,
    run: run_external,
    open_roles: true,
};

/// Environment variables recorded with every external command (they change what commands do);
/// others are recorded only when named with `--env` (secrets stay out of records).
const RECORDED_ENV: &[&str] = &[
    "LANG",
    "LC_ALL",
    "PYTHONHASHSEED",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "TZ",
];

/// The run cannot be replayed (the message says why); `srlm reproduce` reports it as refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotReplayable(pub String);

/// The parameters of an external run: argv, the directory it runs in (`cwd`, relative to the
/// working directory `workdir`), the recorded environment, and the hashes of the files named on
/// the command line that exist there (inputs and outputs, listed in `skip`, excluded).
pub fn params(
    argv: &[String],
    extra_env: &[String],
    workdir: &Path,
    cwd: &str,
    skip: &[&str],
) -> Value {
    let dir = workdir.join(cwd);
    let mut env = BTreeMap::new();
    for name in RECORDED_ENV
        .iter()
        .copied()
        .chain(extra_env.iter().map(String::as_str))
    {
        if let Ok(v) = std::env::var(name) {
            env.insert(name.to_string(), v);
        }
    }
    let mut files = BTreeMap::new();
    for a in argv {
        if skip.contains(&a.as_str()) || Path::new(a).is_absolute() {
            continue;
        }
        let p = dir.join(a);
        if p.is_file() {
            if let Ok(bytes) = std::fs::read(&p) {
                files.insert(a.clone(), blake3::hash(&bytes).to_hex().to_string());
            }
        }
    }
    json!({"command": argv, "cwd": cwd, "env": env, "files": files})
}

fn env_name(prefix: &str, role: &str) -> String {
    let r: String = role
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{r}")
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// The stage function of `srlm run` and of its replay.
pub fn run_external(io: &mut StageIo) -> Result<Metrics, StageFailure> {
    let argv: Vec<String> = serde_json::from_value(io.params["command"].clone())
        .map_err(|e| NotReplayable(format!("the record's command is malformed: {e}")))?;
    let Some(prog) = argv.first() else {
        return Err(NotReplayable("the record has an empty command line".into()).into());
    };
    let cwd = io.params["cwd"].as_str().unwrap_or(".");
    if Path::new(cwd).components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err(NotReplayable(format!(
            "the record's directory {cwd:?} is not inside the working directory"
        ))
        .into());
    }
    let sub = |base: &Path| {
        if cwd == "." {
            base.to_path_buf()
        } else {
            base.join(cwd)
        }
    };
    // a replay's folder already holds the recorded code ([`super::code`])
    let dir = sub(io.dir);
    std::fs::create_dir_all(&dir)?;
    let resolvable = if prog.contains('/') {
        dir.join(prog).is_file()
    } else {
        find_in_path(prog).is_some()
    };
    if !resolvable {
        return Err(NotReplayable(format!(
            "the command `{prog}` does not exist (not found in PATH or on disk)"
        ))
        .into());
    }
    let mut cmd = Command::new(prog);
    cmd.args(&argv[1..]).current_dir(&dir).stdin(Stdio::null());
    if let Some(env) = io.params["env"].as_object() {
        for (k, v) in env {
            if let Some(v) = v.as_str() {
                cmd.env(k, v);
            }
        }
    }
    for (role, p) in &io.inputs {
        cmd.env(env_name("SRLM_INPUT_", role), p);
    }
    for (role, p) in &io.outputs {
        cmd.env(env_name("SRLM_OUTPUT_", role), p);
    }
    // the child's stdout goes to srlm's stderr: srlm's stdout carries only srlm's data
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            cmd.stdout(Stdio::from(fd));
        }
    }
    (io.progress)(super::record::Progress {
        done: 0,
        total: 0,
        message: &format!("running {}", argv.join(" ")),
    });
    let start = std::time::Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{prog}`: {e}"))?;
    let wall = start.elapsed().as_secs_f64();
    if !status.success() {
        let how = status
            .code()
            .map(|c| format!("exit status {c}"))
            .unwrap_or_else(|| "a signal".into());
        return Err(format!("command `{}` failed with {how}", argv.join(" ")).into());
    }
    Ok([
        ("exit_code".to_string(), json!(0)),
        (
            "wall_s".to_string(),
            json!((wall * 1000.0).round() / 1000.0),
        ),
    ]
    .into())
}
