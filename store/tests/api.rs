//! The store crate's own tests, on its public API: durability of refs, gc's and fsck's
//! knowledge of everything in `.srlm/`, pack index repair, working-tree safety, concurrency.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use srlm_store::{CommitOptions, ObjectId, Store, StoreError, Tree, TreeEntry};

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

fn add_commit(wd: &Path, paths: &[&str], msg: &str) -> srlm_store::CommitId {
    let mut s = Store::open(wd).unwrap();
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    s.add(wd, &paths).unwrap();
    s.commit(&CommitOptions {
        message: msg.into(),
        ..Default::default()
    })
    .unwrap()
}

fn read_path(s: &Store, spec: &str) -> Vec<u8> {
    let (_, _, e) = s.resolve_path(spec).unwrap();
    let mut out = Vec::new();
    s.open_entry(&e).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn refs_survive_losing_the_index() {
    let (_t, wd) = new_store();
    write(&wd, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    let c = add_commit(&wd, &["a.jsonl"], "one");
    Store::open(&wd)
        .unwrap()
        .set_tag("AIFT(M1)", &c, false)
        .unwrap();
    std::fs::remove_dir_all(wd.join(".srlm/index")).unwrap();
    std::fs::remove_file(wd.join(".srlm/fastadd")).ok();
    let mut s = Store::open(&wd).unwrap();
    assert_eq!(s.resolve("AIFT(M1)").unwrap(), c);
    assert_eq!(s.resolve("HEAD").unwrap(), c);
    let rep = s.gc(false).unwrap();
    assert_eq!((rep.loose_removed, rep.pieces_removed), (0, 0), "{rep:?}");
    assert_eq!(read_path(&s, "AIFT(M1):a.jsonl"), b"{\"prompt\":\"a\"}\n");
    assert!(s.fsck().unwrap().is_clean());
    assert!(s.status().unwrap().is_clean());
}

#[test]
fn gc_refuses_when_refs_look_lost_and_fsck_says_so() {
    let (_t, wd) = new_store();
    write(&wd, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    let c = add_commit(&wd, &["a.jsonl"], "one");
    std::fs::remove_dir_all(wd.join(".srlm/refs")).unwrap();
    let mut s = Store::open(&wd).unwrap();
    match s.gc(false) {
        Err(StoreError::GcUnreferencedCommits(lost)) => assert_eq!(lost, vec![c.0]),
        other => panic!("gc ran: {other:?}"),
    }
    let f = s.fsck().unwrap();
    assert!(
        f.problems.iter().any(|p| p.contains(&c.to_hex())),
        "{:?}",
        f.problems
    );
    // tagging the commit again makes gc safe
    s.set_tag("rescued", &c, false).unwrap();
    let rep = s.gc(false).unwrap();
    assert_eq!(rep.loose_removed, 0);
    assert!(s.fsck().unwrap().is_clean());
}

#[test]
fn moving_a_ref_deliberately_does_not_block_gc() {
    let (_t, wd) = new_store();
    write(&wd, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    let c1 = add_commit(&wd, &["a.jsonl"], "one");
    let mut s = Store::open(&wd).unwrap();
    // a detached commit, then back to main: the op log shows HEAD left it
    s.checkout(&wd, &c1.to_hex(), &[], false).unwrap();
    drop(s);
    write(&wd, "a.jsonl", b"{\"prompt\":\"b\"}\n");
    let c2 = add_commit(&wd, &["a.jsonl"], "detached");
    let mut s = Store::open(&wd).unwrap();
    s.checkout(&wd, "main", &[], false).unwrap();
    s.set_tag("t", &c1, false).unwrap();
    s.set_tag("t", &c2, true).unwrap();
    s.delete_tag("t").unwrap();
    let rep = s.gc(false).unwrap();
    assert!(rep.loose_removed >= 2, "{rep:?}");
    assert!(s.read_commit(&c2).is_err());
    assert!(s.fsck().unwrap().is_clean());
}

#[test]
fn pins_keep_what_they_name() {
    let (_t, wd) = new_store();
    write(&wd, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    add_commit(&wd, &["a.jsonl"], "one");
    let mut s = Store::open(&wd).unwrap();
    let run = s.put_run(b"{\"stage\":\"x\"}", &[], &[]).unwrap();
    s.set_pin("pending-run", Some(&run.0)).unwrap();
    assert_eq!(s.gc(false).unwrap().loose_removed, 0);
    assert!(s.get_run(&run).is_ok());
    assert!(s.fsck().unwrap().is_clean());
    assert_eq!(s.pins().unwrap(), vec![("pending-run".into(), run.0)]);
    s.set_pin("pending-run", None).unwrap();
    assert_eq!(s.gc(false).unwrap().loose_removed, 1);
    assert!(s.set_pin("../x", Some(&run.0)).is_err());
}

#[test]
fn a_corrupt_pack_index_blocks_nothing_else_and_is_repaired() {
    let (_t, wd) = new_store();
    write(&wd, "a.jsonl", b"{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\n");
    add_commit(&wd, &["a.jsonl"], "one");
    let first: Vec<PathBuf> = std::fs::read_dir(wd.join(".srlm/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().unwrap() == "idx")
        .collect();
    assert_eq!(first.len(), 1);
    let good = std::fs::read(&first[0]).unwrap();
    write(&wd, "m.bin", &vec![3u8; 100_000]);
    add_commit(&wd, &["m.bin"], "two");
    let mut bad = good.clone();
    bad[20] ^= 0xff;
    std::fs::write(&first[0], &bad).unwrap();
    {
        let mut s = Store::open(&wd).unwrap();
        // the other pack still reads, and adds still work
        assert_eq!(read_path(&s, "HEAD:m.bin"), vec![3u8; 100_000]);
        write(&wd, "c.jsonl", b"{\"prompt\":\"c\"}\n");
        s.add(&wd, &[PathBuf::from("c.jsonl")]).unwrap();
        let f = s.fsck().unwrap();
        assert!(
            f.problems.iter().any(|p| p.contains("repair rebuilds it")),
            "{:?}",
            f.problems
        );
        // gc leaves a pack it cannot read alone
        s.gc(false).unwrap();
        let rep = s.repair_pack_indexes().unwrap();
        assert_eq!((rep.fixed.len(), rep.failed.len()), (1, 0));
    }
    assert_eq!(std::fs::read(&first[0]).unwrap(), good);
    let s = Store::open(&wd).unwrap();
    assert_eq!(
        read_path(&s, "HEAD:a.jsonl"),
        b"{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\n"
    );
    assert!(s.fsck().unwrap().is_clean());
}

#[test]
fn trees_naming_git_or_store_paths_are_refused() {
    let (_t, wd) = new_store();
    let s = Store::open(&wd).unwrap();
    let entry: TreeEntry = serde_json::from_value(serde_json::json!({
        "kind": "file", "id": ObjectId::of(b"x").to_hex(), "size": 1
    }))
    .unwrap();
    for p in [
        ".git/hooks/post-checkout",
        "a/.GIT/config",
        "b/.srlm/FORMAT",
    ] {
        let t = Tree {
            entries: BTreeMap::from([(p.to_string(), entry.clone())]),
            units: Default::default(),
        };
        let id = s.put_object(&t.encode()).unwrap();
        let e = s.read_tree(&srlm_store::TreeId(id)).unwrap_err();
        assert!(e.to_string().contains("cannot be tracked"), "{p}: {e}");
    }
    assert!(!s.fsck().unwrap().is_clean());
}

#[test]
fn checkout_never_writes_or_deletes_through_a_symlinked_folder() {
    let (t, wd) = new_store();
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    write(&wd, "sub/x.jsonl", b"{\"a\":1}\n");
    let base = add_commit(&wd, &["sub/x.jsonl"], "base");
    write(&wd, "sub/new.jsonl", b"{\"b\":1}\n");
    add_commit(&wd, &["sub/new.jsonl"], "adds new");
    let mut s = Store::open(&wd).unwrap();
    s.set_branch("with-new", &s.resolve("HEAD").unwrap(), false)
        .unwrap();
    s.checkout(&wd, &base.to_hex(), &[], false).unwrap();
    std::fs::remove_dir_all(wd.join("sub")).unwrap();
    std::fs::write(outside.join("x.jsonl"), b"precious").unwrap();
    std::os::unix::fs::symlink(&outside, wd.join("sub")).unwrap();
    for force in [false, true] {
        let e = s.checkout(&wd, "with-new", &[], force);
        assert!(e.is_err(), "force={force}");
    }
    assert_eq!(std::fs::read(outside.join("x.jsonl")).unwrap(), b"precious");
    assert!(!outside.join("new.jsonl").exists());
}

#[test]
fn a_file_that_became_a_folder_is_replaced_in_the_stage() {
    let (_t, wd) = new_store();
    write(&wd, "x.jsonl", b"{\"a\":1}\n");
    let c1 = add_commit(&wd, &["x.jsonl"], "file");
    std::fs::remove_file(wd.join("x.jsonl")).unwrap();
    write(&wd, "x.jsonl/inner.jsonl", b"{\"b\":1}\n");
    add_commit(&wd, &["."], "folder");
    let mut s = Store::open(&wd).unwrap();
    let keys: Vec<String> = s.staged().unwrap().entries.into_keys().collect();
    assert_eq!(keys, vec!["x.jsonl/inner.jsonl".to_string()]);
    s.checkout(&wd, &c1.to_hex(), &[], false).unwrap();
    assert_eq!(std::fs::read(wd.join("x.jsonl")).unwrap(), b"{\"a\":1}\n");
    s.checkout(&wd, "main", &[], false).unwrap();
    assert_eq!(
        std::fs::read(wd.join("x.jsonl/inner.jsonl")).unwrap(),
        b"{\"b\":1}\n"
    );
}

#[test]
fn a_fifo_at_a_tracked_path_never_hangs_checkout() {
    let (_t, wd) = new_store();
    write(&wd, "f.jsonl", b"{\"a\":1}\n");
    add_commit(&wd, &["f.jsonl"], "one");
    std::fs::remove_file(wd.join("f.jsonl")).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(wd.join("f.jsonl"))
        .status()
        .unwrap()
        .success());
    let wd2 = wd.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = Store::open(&wd2).unwrap();
        let r = s.checkout(&wd2, "HEAD", &[], false).map(|_| ());
        let st = s.status().map(|st| st.unstaged.len());
        tx.send((r.map_err(|e| e.to_string()), st.map_err(|e| e.to_string())))
            .unwrap();
    });
    let (r, st) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("checkout hung on a FIFO");
    let e = r.unwrap_err();
    assert!(e.contains("f.jsonl"), "{e}");
    assert_eq!(st.unwrap(), 1, "status reports the FIFO as modified");
}

#[test]
fn a_half_switched_checkout_is_finished_by_running_it_again() {
    let (_t, wd) = new_store();
    let names: Vec<String> = (0..6).map(|i| format!("d/f{i}.jsonl")).collect();
    for n in &names {
        write(&wd, n, format!("{{\"v\":\"{n} a\"}}\n").as_bytes());
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let a = add_commit(&wd, &refs, "a");
    for n in &names {
        write(&wd, n, format!("{{\"v\":\"{n} b\"}}\n").as_bytes());
    }
    let b = add_commit(&wd, &refs, "b");
    let mut s = Store::open(&wd).unwrap();
    s.checkout(&wd, &a.to_hex(), &[], false).unwrap();
    // as a checkout of b killed half-way leaves it: some files already b's, a temp file
    for n in &names[..3] {
        write(&wd, n, format!("{{\"v\":\"{n} b\"}}\n").as_bytes());
    }
    write(&wd, "d/.srlm-tmp-123-4", b"partial");
    s.checkout(&wd, &b.to_hex(), &[], false).unwrap();
    for n in &names {
        assert_eq!(
            std::fs::read(wd.join(n)).unwrap(),
            format!("{{\"v\":\"{n} b\"}}\n").as_bytes()
        );
    }
    assert!(!wd.join("d/.srlm-tmp-123-4").exists());
    let st = s.status().unwrap();
    assert!(st.is_clean() && st.untracked.is_empty(), "{st:?}");
}

#[test]
fn temp_files_are_ignored_at_any_depth() {
    let (_t, wd) = new_store();
    write(&wd, "a/b/.srlm-tmp-9-9", b"x");
    write(&wd, "a/b/c.jsonl", b"{}\n");
    write(&wd, "a/.git/config", b"[core]");
    let mut s = Store::open(&wd).unwrap();
    let rep = s.add(&wd, &[PathBuf::from(".")]).unwrap();
    let paths: Vec<&str> = rep.added.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["a/b/c.jsonl"]);
    assert!(s.status().unwrap().untracked.is_empty());
}

#[test]
fn each_committer_of_its_own_paths_gets_exactly_them() {
    let (_t, wd) = new_store();
    write(&wd, "seed.jsonl", b"{}\n");
    add_commit(&wd, &["seed.jsonl"], "seed");
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let wd = wd.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let p = format!("w{w}/r{i}.jsonl");
                    write(&wd, &p, format!("{{\"w\":{w},\"i\":{i}}}\n").as_bytes());
                    let mut s = Store::open(&wd).unwrap();
                    let rep = s.add(&wd, &[PathBuf::from(&p)]).unwrap();
                    let changes: BTreeMap<String, Option<TreeEntry>> = rep
                        .added
                        .into_iter()
                        .map(|f| (f.path, Some(f.entry)))
                        .collect();
                    s.commit_entries(
                        &changes,
                        &CommitOptions {
                            message: p.clone(),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let s = Store::open(&wd).unwrap();
    let log = s.log(&s.resolve("HEAD").unwrap()).unwrap();
    assert_eq!(log.len(), 21);
    for (id, c) in &log[..20] {
        let tree = s.commit_tree(id).unwrap();
        let parent = s.commit_tree(&c.parents[0]).unwrap();
        let added: Vec<&String> = tree
            .entries
            .keys()
            .filter(|k| !parent.entries.contains_key(*k))
            .collect();
        assert_eq!(added, vec![&c.message], "commit holds exactly its own file");
    }
    assert_eq!(s.commit_tree(&log[0].0).unwrap().entries.len(), 21);
    assert!(s.fsck().unwrap().is_clean());
}

#[test]
fn readers_share_the_lock_and_write_nothing() {
    let (_t, wd) = new_store();
    write(&wd, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    add_commit(&wd, &["a.jsonl"], "one");
    let r1 = Store::open_read(&wd).unwrap();
    let r2 = Store::open_read(&wd).unwrap();
    assert_eq!(read_path(&r2, "HEAD:a.jsonl"), b"{\"prompt\":\"a\"}\n");
    assert!(r1.fsck().unwrap().is_clean());
    assert!(matches!(r1.put_object(b"x"), Err(StoreError::ReadOnly(_))));
    // a writer waits for the readers
    let (tx, rx) = std::sync::mpsc::channel();
    let wd2 = wd.clone();
    std::thread::spawn(move || {
        let s = Store::open(&wd2).map(|_| ()).map_err(|e| e.to_string());
        tx.send(s).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(400)).is_err(),
        "writer got in"
    );
    drop((r1, r2));
    rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
}
