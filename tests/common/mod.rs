//! Helpers shared by the integration tests (each `tests/*.rs` file is its own crate and
//! includes this with `mod common;`).
#![allow(dead_code)]
use std::path::PathBuf;

/// A component a test needs is absent: skip with a message, or fail where `.ci/run` requires
/// it (`var`=1), so CI never passes by skipping.
pub fn absent(var: &str, what: &str) {
    if std::env::var(var).as_deref() == Ok("1") {
        panic!("{var}=1 but {what}");
    }
    eprintln!("SKIP: {what}");
}

/// The real data beside the checkout (`../shared/data`), or `None` with a message on stderr.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        absent(
            "SRLM_REQUIRE_DATA",
            &format!(
                "{} is absent (real data lives in ../shared/data)",
                p.display()
            ),
        );
        None
    }
}

/// The default model (`SRLM_MODEL` or `~/.cache/srlm/models/...gguf`), or `None` with a message.
pub fn default_model() -> Option<PathBuf> {
    let p = std::env::var_os("SRLM_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/srlm/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if p.exists() {
        Some(p)
    } else {
        absent(
            "SRLM_REQUIRE_MODEL",
            &format!(
                "default model {} is absent (see README set-up)",
                p.display()
            ),
        );
        None
    }
}

/// A `Command` for the real `srlm` binary built by cargo for this test run.
pub fn srlm() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_srlm"))
}

/// The real `srlm` binary run in `dir`, with a fixed author and a patient lock.
pub fn srlm_in(dir: &std::path::Path) -> std::process::Command {
    let mut c = srlm();
    c.current_dir(dir)
        .env("SRLM_AUTHOR", "test")
        .env("SRLM_LOCK_TIMEOUT", "120");
    c
}

/// Run `srlm ARGS` in `dir`.
pub fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    srlm_in(dir).args(args).output().expect("srlm runs")
}

/// Run and require success; returns stdout.
pub fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "srlm {args:?} failed ({:?}):\n{}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Run and require failure with `code`; returns stderr.
pub fn fails(dir: &std::path::Path, args: &[&str], code: i32) -> String {
    let o = run(dir, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(code),
        "srlm {args:?}: expected exit {code}; stderr:\n{err}"
    );
    err
}
