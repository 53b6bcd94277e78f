//! Units: a folder holding the application's marker file is committed as one tree entry (a
//! folder manifest over its files); trees without units keep their old bytes, so old stores
//! read as before.
use std::path::{Path, PathBuf};

use srlm_store::{CommitOptions, EntryKind, ObjectId, Store, Tree, UnitRule};

fn new_store() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let wd = t.path().join("wd");
    Store::init(&wd).unwrap();
    let wd = wd.canonicalize().unwrap();
    (t, wd)
}

fn write(wd: &Path, p: &str, bytes: &[u8]) {
    let f = wd.join(p);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, bytes).unwrap();
}

fn rules() -> Vec<UnitRule> {
    vec![UnitRule {
        marker: "unit.json".into(),
        kind: EntryKind::Checkpoint,
    }]
}

fn commit(wd: &Path, paths: &[&str], units: Vec<UnitRule>) -> srlm_store::CommitId {
    let mut s = Store::open(wd).unwrap();
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    s.add(wd, &paths).unwrap();
    s.commit(&CommitOptions {
        message: "c".into(),
        units,
        allow_empty: true,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_marked_folder_is_one_unit_entry_over_its_files() {
    let (_t, wd) = new_store();
    write(&wd, "m1/unit.json", b"{}");
    write(&wd, "m1/weights.bin", &vec![7u8; 100_000]);
    write(&wd, "m1/inner/unit.json", b"{\"nested\":1}");
    write(&wd, "plain/a.txt", b"a");
    let c = commit(&wd, &["."], rules());
    let s = Store::open(&wd).unwrap();
    let tree = s.commit_tree(&c).unwrap();
    // one unit (the nested marker is part of the outer one); files still listed one by one
    assert_eq!(tree.units.keys().collect::<Vec<_>>(), vec!["m1"]);
    assert!(tree.entries.contains_key("m1/weights.bin"));
    let unit = &tree.units["m1"];
    assert_eq!(unit.kind, EntryKind::Checkpoint);
    assert_eq!(unit.size, 100_000 + 2 + 12);
    let (_, path, e) = s.resolve_path("HEAD:m1").unwrap();
    assert_eq!((path.as_str(), &e), ("m1", unit));
    let folder = s.read_folder(&unit.id).unwrap().expect("a folder manifest");
    assert_eq!(
        folder.files.keys().collect::<Vec<_>>(),
        vec!["inner/unit.json", "unit.json", "weights.bin"]
    );
    assert_eq!(folder.files["weights.bin"], tree.entries["m1/weights.bin"]);
    // a file's manifest is not a folder
    assert!(s
        .read_folder(&tree.entries["plain/a.txt"].id)
        .unwrap()
        .is_none());
    // hashing the folder where it lies (or a copy elsewhere) gives the same id, storing nothing
    assert_eq!(
        s.hash_folder(&wd.join("m1"), EntryKind::Checkpoint)
            .unwrap(),
        *unit
    );
    let copy = tempfile::tempdir().unwrap();
    for name in ["unit.json", "weights.bin", "inner/unit.json"] {
        let dst = copy.path().join(name);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(wd.join("m1").join(name), dst).unwrap();
    }
    assert_eq!(
        s.hash_folder(copy.path(), EntryKind::Checkpoint)
            .unwrap()
            .id,
        unit.id
    );
    drop(s);
    // gc keeps the folder manifest; fsck checks it against the files
    let mut s = Store::open(&wd).unwrap();
    s.gc(false).unwrap();
    assert!(s.read_folder(&unit.id).unwrap().is_some());
    let rep = s.fsck().unwrap();
    assert!(rep.is_clean(), "{:?}", rep.problems);
}

#[test]
fn trees_without_units_keep_their_old_bytes_and_old_stores_read() {
    let (_t, wd) = new_store();
    write(&wd, "m1/unit.json", b"{}");
    write(&wd, "m1/w.bin", b"weights");
    // committed as an older srlm did: no unit rules, five separate files
    let old = commit(&wd, &["."], Vec::new());
    let s = Store::open(&wd).unwrap();
    let c = s.read_commit(&old).unwrap();
    let raw = s.get_object(&c.tree.0).unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(
        text.starts_with("srlm-tree/1\n{\"entries\":[") && !text.contains("units"),
        "{text}"
    );
    let t = Tree::decode(&ObjectId::of(&raw), &raw).unwrap();
    assert!(t.units.is_empty());
    assert_eq!(t.encode(), raw, "an old tree re-encodes to the same bytes");
    assert!(
        s.resolve_path("HEAD:m1").is_err(),
        "an old tree has no unit"
    );
    assert!(s.resolve_path("HEAD:m1/w.bin").is_ok());
    drop(s);
    // the next commit with rules makes the unit; the old commit still reads
    let new = commit(&wd, &["."], rules());
    let s = Store::open(&wd).unwrap();
    assert!(s.commit_tree(&new).unwrap().units.contains_key("m1"));
    assert_eq!(s.commit_tree(&old).unwrap().entries.len(), 2);
    assert!(s.fsck().unwrap().is_clean());
}
