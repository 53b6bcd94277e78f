//! `srlm export` through the real binary: a committed model written as a GGUF and as a
//! Hugging Face folder, each recorded as a stage with lineage back to the model, and loading
//! back as the same model.
mod common;

use std::path::Path;

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = common::srlm()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("srlm runs");
    assert!(
        out.status.success(),
        "srlm {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn export_gguf_and_hf_are_recorded_with_lineage_and_load_back() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    ok(dir, &["init"]);
    srlm::engine::fixture::write_tiny_model(&dir.join("base/tiny"), 11).unwrap();
    ok(dir, &["add", "base/tiny"]);
    ok(dir, &["commit", "-m", "M0: tiny base"]);
    ok(dir, &["tag", "M0"]);
    ok(
        dir,
        &[
            "export",
            "M0:base/tiny",
            "--format",
            "gguf",
            "--type",
            "f32",
            "-o",
            "out/tiny.gguf",
            "-q",
        ],
    );
    ok(
        dir,
        &[
            "export",
            "M0:base/tiny",
            "--format",
            "hf",
            "-o",
            "out/hf",
            "-q",
        ],
    );
    let base = srlm::engine::checkpoint::load(&dir.join("base/tiny")).unwrap();
    for path in ["out/tiny.gguf", "out/hf"] {
        let back = srlm::engine::checkpoint::load(&dir.join(path)).unwrap();
        assert_eq!(back.chat, base.chat, "{path}");
        for (name, w) in &base.weights.0 {
            let b = back
                .weights
                .get(name)
                .unwrap_or_else(|| panic!("{path}: {name}"));
            let d: f32 = (w - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert_eq!(d, 0.0, "{path}: {name}");
        }
    }
    for f in [
        "out/tiny.gguf",
        "out/hf/model.safetensors",
        "out/hf/chat_template.jinja",
    ] {
        let lineage = ok(dir, &["lineage", f, "--format", "json"]);
        assert!(lineage.contains("\"export\""), "{f}: {lineage}");
        assert!(lineage.contains("base/tiny"), "{f}: {lineage}");
    }
    // Replaying the recorded export gives the same bytes.
    let rep = ok(dir, &["reproduce", "out/tiny.gguf"]);
    assert!(rep.contains("identical"), "{rep}");
}
