//! llama.cpp as the peer of `srlm bench engine`: llama-cpp-python in a child process, fed the
//! same token ids on the same GGUF (re-quantized by llama.cpp itself for a `q8_0` / `q4_0` /
//! `f32` row) with the same thread count, timed one prefill at a time so its repetitions can
//! alternate with srlm's.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context};

use crate::engine::model::WeightMode;

/// The peer's side: load (quantizing first if asked), warm up, then one timed prefill of the
/// whole prompt (one batch) per line read, its wall seconds printed back.
const SCRIPT: &str = r#"
import json, sys, time
import llama_cpp
from llama_cpp import Llama
req = json.loads(sys.argv[1])
path, threads, toks = req["model"], req["threads"], req["tokens"]
if req["ftype"] is not None:
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.allow_requantize = req["ftype"], threads, True
    if llama_cpp.llama_model_quantize(path.encode(), req["out"].encode(), p) != 0:
        sys.exit("llama_model_quantize failed")
    path = req["out"]
n = max(512, len(toks))
llm = Llama(model_path=path, n_ctx=n + 16, n_batch=n, n_ubatch=n, n_threads=threads,
            n_threads_batch=threads, verbose=False)
llm.reset(); llm.eval(toks[:8])
print(json.dumps({"version": llama_cpp.__version__}), flush=True)
for line in sys.stdin:
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(toks)
    print(time.perf_counter() - t0, flush=True)
"#;

/// A Python that has llama-cpp-python: `explicit`, else `$SRLM_LLAMA_SERVER_PYTHON`, else
/// the README's virtual environment when it exists.
pub fn find_python(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("SRLM_LLAMA_SERVER_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let home = PathBuf::from(std::env::var_os("HOME")?);
    let venv = home.join(".cache/srlm/llama-server-venv/bin/python");
    venv.exists().then_some(venv)
}

/// llama.cpp's file type for a weight mode (`None`: the GGUF as stored).
fn ftype(mode: WeightMode) -> Option<u32> {
    // llama.h: LLAMA_FTYPE_ALL_F32 = 0, MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7
    match mode {
        WeightMode::Auto | WeightMode::Stored => None,
        WeightMode::F32 => Some(0),
        WeightMode::Q4_0 => Some(2),
        WeightMode::Q8_0 => Some(7),
    }
}

/// A loaded llama.cpp waiting for prefill requests.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// llama-cpp-python's version.
    pub version: String,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Start `python` on `gguf` held as `mode` says, to prefill `tokens` on `threads`.
    pub fn start(
        python: &Path,
        gguf: &Path,
        mode: WeightMode,
        threads: usize,
        tokens: &[u32],
    ) -> anyhow::Result<Peer> {
        if gguf.extension().is_none_or(|e| e != "gguf") {
            bail!("llama.cpp needs a .gguf model, not {}", gguf.display());
        }
        let dir = tempfile::tempdir()?;
        let req = serde_json::json!({
            "model": gguf,
            "ftype": ftype(mode),
            "out": dir.path().join("model.gguf"),
            "threads": threads,
            "tokens": tokens,
        });
        let mut child = Command::new(python)
            .args(["-c", SCRIPT, &req.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", python.display()))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let hello: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let out = child.wait_with_output()?;
                bail!(
                    "llama.cpp ({}) did not start: {}",
                    python.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        };
        Ok(Peer {
            version: hello["version"].as_str().unwrap_or("?").to_string(),
            child,
            stdin,
            stdout,
            _dir: dir,
        })
    }

    /// One timed prefill of the prompt: wall seconds, as the peer measured them.
    pub fn prefill(&mut self) -> anyhow::Result<f64> {
        writeln!(self.stdin, "go")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.trim()
            .parse()
            .with_context(|| format!("llama.cpp answered {line:?}"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing stdin ends the peer's loop; kill it if it is stuck.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
