//! llama.cpp's OpenAI-compatible server (from PyPI: `llama-cpp-python[server]`) on loopback,
//! started by a test on the default GGUF and stopped by its pid when dropped. The Python that
//! has it is `SRLM_LLAMA_SERVER_PYTHON`, else `~/.cache/srlm/llama-server-venv/bin/python`
//! (where `.ci/run` installs it). Absent: the test skips with a message, unless
//! `SRLM_REQUIRE_SERVER=1` (CI), where it fails.
#![allow(dead_code)]
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One server at a time per test binary: the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct LlamaServer {
    child: Child,
    pub url: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        // stopped by its own pid, never by name
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    std::env::var_os("SRLM_LLAMA_SERVER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/srlm/llama-server-venv/bin/python")
        })
}

fn required() -> bool {
    std::env::var("SRLM_REQUIRE_SERVER").is_ok_and(|v| v == "1")
}

/// Starts the server on the default model, or `None` (with a message) when it or the model
/// is absent and not required.
pub fn start() -> Option<LlamaServer> {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let py = python();
    let has_server = py.exists()
        && Command::new(&py)
            .args(["-c", "import llama_cpp.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !has_server {
        let msg = format!(
            "llama.cpp's server is absent ({} cannot import llama_cpp.server; \
             see README: `pip install 'llama-cpp-python[server]'` into that venv)",
            py.display()
        );
        if required() {
            panic!("SRLM_REQUIRE_SERVER=1: {msg}");
        }
        eprintln!("SKIP: {msg}");
        return None;
    }
    let model = match crate::common::default_model() {
        Some(m) => m,
        None if required() => panic!("SRLM_REQUIRE_SERVER=1 but the default model is absent"),
        None => return None,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&py)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_threads", "2", "--n_ctx", "4096"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("the server starts");
    let s = LlamaServer {
        child,
        url: format!("http://127.0.0.1:{port}/v1"),
        log,
        _dir: dir,
        _turn: turn,
    };
    let t0 = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && answers_200(&format!("{}/models", s.url))
        {
            return Some(s);
        }
        if t0.elapsed() > Duration::from_secs(180) {
            panic!(
                "llama.cpp's server did not answer in 180 s; its log:\n{}",
                std::fs::read_to_string(&s.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Whether `GET url` answers 200 (a plain HTTP/1.0 exchange: the test needs no client crate).
fn answers_200(url: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let Ok(mut c) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(c, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = c.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200") || buf.starts_with("HTTP/1.0 200")
}
