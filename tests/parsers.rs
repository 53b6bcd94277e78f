//! Property tests of srlm's own parsers on hostile bytes: the JSONL validator, the dataset row
//! parser behind `diff`, and the GGUF header reader (random bytes, and near-valid headers made
//! by mutating a real GGUF prefix). Each decodes or returns an error; none panics.
mod common;

use proptest::prelude::*;

fn gguf_prefix() -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(common::default_model()?).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    std::io::Read::read_exact(&mut f, &mut buf).ok()?;
    Some(buf)
}

fn check_gguf(bytes: &[u8]) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("m.gguf");
    std::fs::write(&p, bytes).unwrap();
    if let Ok(g) = srlm::engine::gguf::GgufFile::open(&p) {
        let _ = g.config();
        let _ = g.chat_template();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn validate_never_panics_on_random_bytes(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = srlm::hooks::validate_jsonl(&raw[..], "x.jsonl");
    }

    #[test]
    fn validate_never_panics_on_near_valid_jsonl(
        rows in proptest::collection::vec(
            ("[a-z]{0,6}", "[ -~]{0,12}", any::<bool>(), any::<bool>()), 1..8),
    ) {
        let mut text = String::new();
        for (k, v, pair, broken) in rows {
            let row = if pair {
                serde_json::json!({"prompt": v, "chosen": [{"role": "assistant", "content": v}],
                    "rejected": k})
            } else {
                serde_json::json!({ k: v })
            };
            let mut line = row.to_string();
            if broken {
                line.truncate(line.len() / 2);
            }
            text.push_str(&line);
            text.push('\n');
        }
        let problems = srlm::hooks::validate_jsonl(text.as_bytes(), "x.jsonl").unwrap();
        for p in problems {
            prop_assert!(p.line >= 1 && p.file == "x.jsonl");
        }
    }

    #[test]
    fn gguf_header_reader_never_panics_on_random_bytes(
        raw in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(raw);
        check_gguf(&bytes);
    }

    #[test]
    fn gguf_header_reader_never_panics_on_a_mutated_real_header(
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
        cut in 16usize..65536,
    ) {
        let Some(mut bytes) = gguf_prefix() else { return Ok(()) };
        for (at, b) in edits {
            bytes[at] = b;
        }
        bytes.truncate(cut);
        check_gguf(&bytes);
    }
}
