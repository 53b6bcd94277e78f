//! One named test per fixed bug, driving the real `srlm` binary (ripgrep's habit), one module
//! per area: here issue 13's audit findings (the store); `models` issue 14's (models srlm cannot
//! run exactly); `stages` issue 12's (users' own inputs to stages).
#[path = "../common/mod.rs"]
mod common;
mod models;
mod stages;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails, ok, run, srlm_in};

fn new_store() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().canonicalize().unwrap().join("wd");
    std::fs::create_dir_all(&d).unwrap();
    ok(&d, &["init"]);
    (t, d)
}

fn write(d: &Path, p: &str, bytes: &[u8]) {
    let f = d.join(p);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, bytes).unwrap();
}

fn add_commit(d: &Path, path: &str, msg: &str) {
    ok(d, &["add", path]);
    ok(d, &["commit", "-m", msg]);
}

fn no_panic(o: &std::process::Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_ne!(o.status.code(), Some(101), "{what} panicked:\n{err}");
    assert!(!err.contains("panicked"), "{what} panicked:\n{err}");
    err
}

/// A mount for the test (tmpfs or read-only bind), unmounted when dropped. `None` (with a
/// message) where this user cannot mount, unless SRLM_REQUIRE_MOUNT=1 (CI runs as root).
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str]) -> bool {
        Command::new("mount")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn skip(what: &str) -> Option<Mount> {
        common::absent(
            "SRLM_REQUIRE_MOUNT",
            &format!("cannot {what} here (needs root); the test runs in CI"),
        );
        None
    }

    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).unwrap();
        if Mount::run(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            dir.to_str()?,
        ]) {
            Some(Mount(dir.to_path_buf()))
        } else {
            Mount::skip("mount a tmpfs")
        }
    }

    fn read_only(dir: &Path) -> Option<Mount> {
        let d = dir.to_str()?;
        if Mount::run(&["--bind", d, d]) {
            if Mount::run(&["-o", "remount,bind,ro", d]) {
                return Some(Mount(dir.to_path_buf()));
            }
            let _ = Command::new("umount").arg(d).status();
        }
        Mount::skip("bind-mount a folder read-only")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

// ---------------------------------------------------------------- 1, 2: security

#[test]
fn checkout_never_writes_or_deletes_through_a_symlinked_folder() {
    let (t, d) = new_store();
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    write(&d, "sub/x.jsonl", b"{\"a\":1}\n");
    add_commit(&d, "sub/x.jsonl", "base");
    ok(&d, &["tag", "BASE"]);
    write(&d, "sub/new.jsonl", b"{\"b\":1}\n");
    add_commit(&d, "sub/new.jsonl", "adds new");
    ok(&d, &["branch", "with-new"]);
    ok(&d, &["checkout", "BASE"]);
    std::fs::remove_dir_all(d.join("sub")).unwrap();
    std::fs::write(outside.join("x.jsonl"), b"precious").unwrap();
    std::os::unix::fs::symlink("../outside", d.join("sub")).unwrap();
    for args in [
        &["checkout", "BASE"][..],
        &["checkout", "with-new"],
        &["checkout", "--force", "with-new"],
    ] {
        let o = run(&d, args);
        assert!(!o.status.success(), "{args:?} succeeded");
        no_panic(&o, "checkout");
    }
    assert_eq!(std::fs::read(outside.join("x.jsonl")).unwrap(), b"precious");
    assert!(!outside.join("new.jsonl").exists());
}

#[test]
fn a_tree_entry_inside_dot_git_is_refused_by_fsck_and_checkout() {
    let (_t, d) = new_store();
    write(&d, "ok.txt", b"x");
    add_commit(&d, "ok.txt", "one");
    // craft what a hostile remote could send: a commit whose tree writes a git hook
    let id = {
        let s = srlm_store::Store::open(&d).unwrap();
        let (_, _, e) = s.resolve_path("HEAD:ok.txt").unwrap();
        let t = srlm_store::Tree {
            entries: [(".git/hooks/post-checkout".to_string(), e)].into(),
            units: Default::default(),
        };
        let tree = srlm_store::TreeId(s.put_object(&t.encode()).unwrap());
        let c = srlm_store::Commit {
            tree,
            parents: vec![],
            author: "x".into(),
            time: "2026-01-01T00:00:00Z".into(),
            message: "evil".into(),
            run: None,
        };
        srlm_store::CommitId(s.put_object(&c.encode()).unwrap())
    };
    let err = fails(&d, &["checkout", &id.to_hex()], 1);
    assert!(err.contains(".git"), "{err}");
    assert!(!d.join(".git").exists());
    let out = String::from_utf8(run(&d, &["fsck"]).stdout).unwrap();
    assert!(out.contains("cannot be tracked"), "{out}");
}

// ---------------------------------------------------------------- 3-6: losing the store

#[test]
fn refs_survive_deleting_the_index_and_gc_deletes_nothing() {
    let (_t, d) = new_store();
    write(&d, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    add_commit(&d, "a.jsonl", "one");
    ok(&d, &["tag", "M1"]);
    std::fs::remove_dir_all(d.join(".srlm/index")).unwrap();
    assert!(ok(&d, &["fsck"]).contains("ok"));
    let gc: serde_json::Value = serde_json::from_str(&ok(&d, &["gc", "--json"])).unwrap();
    assert_eq!(gc["loose_removed"], 0, "{gc}");
    assert_eq!(ok(&d, &["show", "M1:a.jsonl"]), "{\"prompt\":\"a\"}\n");
}

#[test]
fn gc_refuses_when_the_refs_are_gone() {
    let (_t, d) = new_store();
    write(&d, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    add_commit(&d, "a.jsonl", "one");
    std::fs::remove_dir_all(d.join(".srlm/refs")).unwrap();
    let err = fails(&d, &["gc"], 1);
    assert!(
        err.contains("gc refused") && err.contains("--force"),
        "{err}"
    );
    let o = run(&d, &["fsck"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(d.join(".srlm/objects").read_dir().unwrap().count() > 0);
}

#[test]
fn a_full_disk_leaves_reads_working_and_the_store_recovers() {
    let t = tempfile::tempdir().unwrap();
    let Some(_m) = Mount::tmpfs(&t.path().join("fs"), "6m") else {
        return;
    };
    let d = t.path().join("fs/wd");
    std::fs::create_dir_all(&d).unwrap();
    ok(&d, &["init"]);
    write(&d, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    add_commit(&d, "a.jsonl", "one");
    write(&d, "b.jsonl", b"{\"prompt\":\"b\"}\n");
    // fill the file system
    let filler = t.path().join("fs/filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![7u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    for args in [
        &["log"][..],
        &["status"],
        &["fsck"],
        &["show", "HEAD:a.jsonl"],
    ] {
        ok(&d, args);
    }
    write(&d, "b.jsonl", b"{\"prompt\":\"b\"}\n");
    let o = run(&d, &["add", "b.jsonl"]);
    no_panic(&o, "add on a full disk");
    // as a crash on a full disk leaves sled: an empty snapshot being generated
    std::fs::remove_file(&filler).unwrap();
    std::fs::write(d.join(".srlm/index/snap.0000000000000000.generating"), b"").unwrap();
    add_commit(&d, "b.jsonl", "two");
    assert!(ok(&d, &["fsck"]).contains("ok"));
    assert_eq!(ok(&d, &["show", "HEAD:b.jsonl"]), "{\"prompt\":\"b\"}\n");
}

#[test]
fn a_damaged_index_database_is_rebuilt() {
    let (_t, d) = new_store();
    write(&d, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    add_commit(&d, "a.jsonl", "one");
    // garbage where sled keeps its data
    for e in std::fs::read_dir(d.join(".srlm/index")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    write(&d, "b.jsonl", b"{\"prompt\":\"b\"}\n");
    add_commit(&d, "b.jsonl", "two");
    assert!(ok(&d, &["fsck"]).contains("ok"));
}

#[test]
fn gc_keeps_the_pending_run_of_a_no_commit_stage() {
    let (_t, d) = new_store();
    write(&d, "in.txt", b"b\na\n");
    add_commit(&d, "in.txt", "input");
    ok(
        &d,
        &[
            "run",
            "--stage",
            "sort",
            "--input",
            "data=in.txt",
            "--output",
            "out.txt",
            "--no-commit",
            "--",
            "sh",
            "-c",
            "sort in.txt > out.txt",
        ],
    );
    ok(&d, &["gc"]);
    let out = ok(&d, &["commit", "-m", "sorted", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["run"].is_string(), "{out}");
    assert!(!d.join(".srlm/pins/pending-run").exists());
    assert!(ok(&d, &["fsck"]).contains("ok"));
}

#[test]
fn a_corrupt_pack_index_is_reported_and_repaired() {
    let (_t, d) = new_store();
    write(&d, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    add_commit(&d, "a.jsonl", "one");
    let idx: Vec<PathBuf> = std::fs::read_dir(d.join(".srlm/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().unwrap() == "idx")
        .collect();
    let mut bytes = std::fs::read(&idx[0]).unwrap();
    bytes[30] ^= 1;
    std::fs::write(&idx[0], bytes).unwrap();
    write(&d, "b.jsonl", b"{\"prompt\":\"b\"}\n");
    add_commit(&d, "b.jsonl", "two still works");
    assert_eq!(ok(&d, &["show", "HEAD:b.jsonl"]), "{\"prompt\":\"b\"}\n");
    let o = run(&d, &["fsck"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stdout).contains("repair"));
    ok(&d, &["fsck", "--repair"]);
    assert_eq!(ok(&d, &["show", "HEAD:a.jsonl"]), "{\"prompt\":\"a\"}\n");
}

// ---------------------------------------------------------------- 7-9: crash leftovers

#[test]
fn a_killed_commit_leaves_no_copies_outside_the_store() {
    let (t, d) = new_store();
    let tmp = t.path().join("tmpdir");
    std::fs::create_dir_all(&tmp).unwrap();
    write(&d, ".srlm/hooks/pre-commit", b"#!/bin/sh\nsleep 30\n");
    Command::new("chmod")
        .args(["+x", ".srlm/hooks/pre-commit"])
        .current_dir(&d)
        .status()
        .unwrap();
    write(&d, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    ok(&d, &["add", "a.jsonl"]);
    let mut child = srlm_in(&d)
        .args(["commit", "-m", "x"])
        .env("TMPDIR", &tmp)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(d.join(".srlm/tmp")).unwrap().count() == 0 {
        assert!(
            Instant::now() < deadline,
            "the commit never staged its copies"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "copies in TMPDIR"
    );
    std::fs::remove_file(d.join(".srlm/hooks/pre-commit")).unwrap();
    ok(&d, &["commit", "-m", "y"]);
    assert_eq!(std::fs::read_dir(d.join(".srlm/tmp")).unwrap().count(), 0);
}

#[test]
fn commit_exits_zero_when_the_lock_is_busy_right_after_it() {
    let (_t, d) = new_store();
    // a post-commit hook that leaves a process holding the store lock
    write(
        &d,
        ".srlm/hooks/post-commit",
        b"#!/bin/sh\nflock \"$SRLM_STORE/lock\" sleep 3 >/dev/null 2>&1 &\nsleep 0.3\n",
    );
    Command::new("chmod")
        .args(["+x", ".srlm/hooks/post-commit"])
        .current_dir(&d)
        .status()
        .unwrap();
    write(&d, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    ok(&d, &["add", "a.jsonl"]);
    let o = srlm_in(&d)
        .args(["commit", "-m", "x"])
        .env("SRLM_LOCK_TIMEOUT", "0.5")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("[main "));
}

// ---------------------------------------------------------------- 10, 11: concurrency, locks

#[test]
fn concurrent_committers_of_their_own_paths_each_commit_what_they_named() {
    let (_t, d) = new_store();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let p = format!("w{w}-{i}.jsonl");
                    write(&d, &p, format!("{{\"w\":{w},\"i\":{i}}}\n").as_bytes());
                    ok(&d, &["commit", "-m", &p, &p]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let log = ok(&d, &["log", "--oneline"]);
    assert_eq!(log.lines().count(), 20, "{log}");
    let s = srlm_store::Store::open_read(&d).unwrap();
    for (id, c) in s.log(&s.resolve("HEAD").unwrap()).unwrap() {
        let tree = s.commit_tree(&id).unwrap();
        let before = match c.parents.first() {
            Some(p) => s.commit_tree(p).unwrap(),
            None => Default::default(),
        };
        let added: Vec<&String> = tree
            .entries
            .keys()
            .filter(|k| !before.entries.contains_key(*k))
            .collect();
        assert_eq!(added, vec![&c.message]);
    }
}

#[test]
fn a_lock_timeout_names_the_real_holder_and_its_fraction_of_a_second() {
    let (_t, d) = new_store();
    let mut holder = Command::new("flock")
        .arg(d.join(".srlm/lock"))
        .args(["sleep", "20"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    write(&d, "a.jsonl", b"{}\n");
    let o = srlm_in(&d)
        .args(["add", "a.jsonl"])
        .env("SRLM_LOCK_TIMEOUT", "0.5")
        .output()
        .unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("after 0.5s"), "{err}");
    assert!(
        err.contains("sleep 20"),
        "the holder is flock's sleep, not srlm: {err}"
    );
}

// ---------------------------------------------------------------- 12-14: odd input

#[test]
fn odd_names_and_lock_timeouts_never_panic() {
    use std::os::unix::ffi::OsStrExt;
    let (_t, d) = new_store();
    let bad = std::ffi::OsStr::from_bytes(b"bad\xffname.jsonl");
    std::fs::write(d.join(bad), b"{}\n").unwrap();
    let o = srlm_in(&d).arg("add").arg(bad).output().unwrap();
    let err = no_panic(&o, "add of a non-UTF-8 name");
    assert!(!o.status.success() && err.contains("UTF-8"), "{err}");
    let o = srlm_in(&d).args(["add", "."]).output().unwrap();
    let err = no_panic(&o, "add . beside a non-UTF-8 name");
    assert!(!o.status.success() && err.contains("bad"), "{err}");
    for v in ["-1", "NaN", "inf", "1e309", "soon"] {
        let o = srlm_in(&d)
            .args(["status"])
            .env("SRLM_LOCK_TIMEOUT", v)
            .output()
            .unwrap();
        no_panic(&o, &format!("SRLM_LOCK_TIMEOUT={v}"));
        let good = v == "inf" || v == "1e309";
        assert_eq!(o.status.success(), good, "SRLM_LOCK_TIMEOUT={v}");
    }
    std::fs::write(d.join("new\nline.jsonl"), b"{}\n").unwrap();
    let o = srlm_in(&d)
        .args(["add", "new\nline.jsonl"])
        .output()
        .unwrap();
    let err = no_panic(&o, "add of a name with a newline");
    assert!(
        !o.status.success() && err.contains("control character"),
        "{err}"
    );
}

#[test]
fn a_fifo_at_a_tracked_path_does_not_hang_checkout() {
    let (_t, d) = new_store();
    write(&d, "f.jsonl", b"{}\n");
    add_commit(&d, "f.jsonl", "one");
    std::fs::remove_file(d.join("f.jsonl")).unwrap();
    assert!(Command::new("mkfifo")
        .arg(d.join("f.jsonl"))
        .status()
        .unwrap()
        .success());
    let mut child = srlm_in(&d)
        .args(["checkout", "HEAD"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(!st.success(), "checkout replaced a FIFO without --force");
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("checkout hung on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok(&d, &["status"]);
}

#[test]
fn a_file_replaced_by_a_folder_commits_and_checks_out() {
    let (_t, d) = new_store();
    write(&d, "x.jsonl", b"{}\n");
    add_commit(&d, "x.jsonl", "file");
    ok(&d, &["tag", "FILE"]);
    std::fs::remove_file(d.join("x.jsonl")).unwrap();
    write(&d, "x.jsonl/inner.jsonl", b"{\"a\":1}\n");
    add_commit(&d, ".", "folder");
    let v: serde_json::Value = serde_json::from_str(&ok(&d, &["show", "HEAD", "--json"])).unwrap();
    let files: Vec<&String> = v["files"].as_object().unwrap().keys().collect();
    assert_eq!(files, vec!["x.jsonl/inner.jsonl"]);
    ok(&d, &["checkout", "FILE"]);
    assert_eq!(std::fs::read(d.join("x.jsonl")).unwrap(), b"{}\n");
    ok(&d, &["checkout", "main"]);
    assert!(d.join("x.jsonl/inner.jsonl").is_file());
}

#[test]
fn a_read_only_store_can_still_be_read() {
    let (_t, d) = new_store();
    write(&d, "a.jsonl", b"{\"prompt\":\"a\"}\n");
    add_commit(&d, "a.jsonl", "one");
    write(&d, "a.jsonl", b"{\"prompt\":\"b\"}\n");
    add_commit(&d, "a.jsonl", "two");
    let Some(_m) = Mount::read_only(&d) else {
        return;
    };
    for args in [
        &["log"][..],
        &["status"],
        &["fsck"],
        &["show", "HEAD~1:a.jsonl"],
        &["diff", "HEAD~1", "HEAD"],
        &["lineage", "HEAD:a.jsonl"],
    ] {
        ok(&d, args);
    }
    let o = run(&d, &["tag", "x"]);
    no_panic(&o, "tag on a read-only store");
    assert!(!o.status.success());
}

// ---------------------------------------------------------------- 15: validation

#[test]
fn a_pair_row_after_a_plain_first_row_is_still_validated() {
    let (_t, d) = new_store();
    write(
        &d,
        "p.jsonl",
        b"{\"prompt\":\"p\"}\n{\"prompt\":\"q\",\"chosen\":\"a\",\"rejected\":\"a\"}\n",
    );
    ok(&d, &["add", "p.jsonl"]);
    let err = fails(&d, &["commit", "-m", "x"], 3);
    assert!(err.contains("p.jsonl:2: field `chosen`"), "{err}");
}

#[test]
fn an_empty_message_content_in_a_trl_pair_is_refused() {
    let (_t, d) = new_store();
    let row = serde_json::json!({"prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": ""}],
        "rejected": [{"role": "assistant", "content": "no"}]});
    write(&d, "p.jsonl", format!("{row}\n").as_bytes());
    ok(&d, &["add", "p.jsonl"]);
    let err = fails(&d, &["commit", "-m", "x"], 3);
    assert!(
        err.contains("p.jsonl:1: field `chosen`: message 0 has empty `content`"),
        "{err}"
    );
}

#[test]
fn crlf_and_lf_rows_are_reported_as_reformatted_in_a_files_diff() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a.jsonl"), t.path().join("b.jsonl"));
    std::fs::write(&a, b"{\"prompt\":\"p\",\"response\":\"r\"}\r\n").unwrap();
    std::fs::write(&b, b"{\"prompt\":\"p\",\"response\":\"r\"}\n").unwrap();
    let out = ok(
        t.path(),
        &[
            "diff",
            "--files",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let summary = &v["datasets"][0]["summary"];
    assert_eq!(
        (&summary["unchanged"], &summary["reformatted"]),
        (&1.into(), &1.into()),
        "{out}"
    );
    let text = ok(
        t.path(),
        &["diff", "--files", a.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert!(text.contains("=1 unchanged (1 reformatted)"), "{text}");
}

#[test]
fn show_of_a_damaged_file_writes_nothing() {
    let (_t, d) = new_store();
    let rows: String = (0..3000)
        .map(|i| format!("{{\"prompt\":\"row {i} {}\"}}\n", "x".repeat(i % 50)))
        .collect();
    write(&d, "big.jsonl", rows.as_bytes());
    add_commit(&d, "big.jsonl", "one");
    let pack = std::fs::read_dir(d.join(".srlm/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().unwrap() == "pack")
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x55; // the last frame
    std::fs::write(&pack, bytes).unwrap();
    let o = run(&d, &["show", "HEAD:big.jsonl"]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty(), "{} bytes written", o.stdout.len());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing was written"));
}

// ---------------------------------------------------------------- issue 14: models
