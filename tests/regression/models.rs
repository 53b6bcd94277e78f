//! Issue 14: models srlm cannot run exactly are refused, clearly.
use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

/// A copy of a fixture model with its `config.json` edited.
fn edited(name: &str, dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir(&out).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    let p = out.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
    out
}

fn logprob(model: &Path) -> std::process::Output {
    common::srlm()
        .args(["logprob", "--model"])
        .arg(model)
        .args(["--prompt", "w5 w6 w7", "--response", "w8 w9"])
        .output()
        .unwrap()
}

/// Issue 14: a model srlm cannot run exactly was run approximately (Qwen2's biases dropped,
/// Llama 3's rope scaling ignored). Now it runs the real thing or refuses by name.
#[test]
fn issue14_models_srlm_cannot_run_exactly_are_refused() {
    let t = tempfile::tempdir().unwrap();
    // Run as they are: Qwen2 with its biases, Llama 3 with its scaling.
    for name in ["qwen2-tied", "llama3"] {
        let out = logprob(&fixture(name));
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cases = [
        (
            edited("qwen2-tied", t.path(), |v| {
                v["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
                v["model_type"] = "llama".into();
            }),
            "_proj.bias",
        ),
        (
            edited("llama3", t.path(), |v| {
                v["rope_parameters"]["rope_type"] = "yarn".into();
            }),
            "yarn",
        ),
        (
            edited("mistral", t.path(), |v| {
                v["architectures"] = serde_json::json!(["Gemma2ForCausalLM"]);
            }),
            "Qwen2ForCausalLM",
        ),
    ];
    for (dir, needle) in cases {
        let out = logprob(&dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{}: {err}",
            dir.display()
        );
    }
}
