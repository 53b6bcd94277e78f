//! Property tests: the decoders of everything the store reads back (trees, commits, manifests,
//! run records) and its ref and path checks, fed random bytes and near-valid inputs, never
//! panic: they decode or return an error.
use proptest::prelude::*;
use srlm_store::{check_tree_path, Commit, FolderManifest, Manifest, ObjectId, RunObject, Tree};

fn decode_all(raw: &[u8]) {
    let id = ObjectId::of(raw);
    let _ = Tree::decode(&id, raw);
    let _ = Commit::decode(&id, raw);
    let _ = Manifest::decode(&id, raw);
    let _ = RunObject::decode(&id, raw);
    let _ = FolderManifest::decode(&id, raw);
}

/// Valid encodings to start mutating from.
fn seeds() -> Vec<Vec<u8>> {
    let entry = serde_json::json!({"kind": "dataset", "id": ObjectId::of(b"m").to_hex(),
        "size": 3, "rows": 1});
    let entry: srlm_store::TreeEntry = serde_json::from_value(entry).unwrap();
    let tree: Tree = Tree {
        entries: [("a/b.jsonl".to_string(), entry.clone())].into(),
        units: [("a".to_string(), entry.clone())].into(),
    };
    let folder = FolderManifest {
        files: [("b.jsonl".to_string(), entry)].into(),
    };
    let commit = Commit {
        tree: srlm_store::TreeId(ObjectId::of(b"t")),
        parents: vec![srlm_store::CommitId(ObjectId::of(b"p"))],
        author: "a".into(),
        time: "2026-01-01T00:00:00Z".into(),
        message: "m".into(),
        run: None,
    };
    let run = RunObject {
        record: b"{\"x\":1}".to_vec(),
        inputs: vec![ObjectId::of(b"i")],
        outputs: vec![],
    };
    vec![
        tree.encode(),
        commit.encode(),
        run.encode(),
        folder.encode(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&raw);
    }

    #[test]
    fn near_valid_objects_never_panic(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..6),
        cut in any::<u16>(),
    ) {
        let mut raw = seeds()[which].clone();
        for (at, b) in edits {
            let i = at as usize % raw.len();
            raw[i] = b;
        }
        let keep = raw.len() - (cut as usize % raw.len().max(1)) / 4;
        raw.truncate(keep);
        decode_all(&raw);
    }

    #[test]
    fn tree_paths_are_checked_not_panicked_on(p in "\\PC{0,40}") {
        let _ = check_tree_path(&p);
    }
}

#[test]
fn the_seeds_decode() {
    let s = seeds();
    assert!(Tree::decode(&ObjectId::of(&s[0]), &s[0]).is_ok());
    assert!(Commit::decode(&ObjectId::of(&s[1]), &s[1]).is_ok());
    assert!(RunObject::decode(&ObjectId::of(&s[2]), &s[2]).is_ok());
    assert!(FolderManifest::decode(&ObjectId::of(&s[3]), &s[3]).is_ok());
}
