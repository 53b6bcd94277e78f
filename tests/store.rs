//! Integration tests of the store commands, driving the real `srlm` binary: round trips on the
//! real data, dedup, corruption, kill -9, concurrency, bad input, refs, gc.
mod common;

use std::path::{Path, PathBuf};

use rand::{Rng, RngCore, SeedableRng};

use common::{fails, ok, run, srlm_in as srlm};

fn new_store() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().canonicalize().unwrap();
    ok(&d, &["init"]);
    (t, d)
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Bytes under `.srlm` that hold data (objects and packs).
fn store_bytes(d: &Path) -> u64 {
    fn du(p: &Path) -> u64 {
        let md = std::fs::symlink_metadata(p).unwrap();
        if md.is_dir() {
            std::fs::read_dir(p)
                .unwrap()
                .map(|e| du(&e.unwrap().path()))
                .sum()
        } else {
            md.len()
        }
    }
    du(&d.join(".srlm/objects")) + du(&d.join(".srlm/packs"))
}

fn commit_count(d: &Path) -> usize {
    ok(d, &["log", "--oneline"]).lines().count()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn real_data_round_trip_is_byte_exact() {
    let files = [
        "oasst2/oasst2_evaluation_fine_tuning.jsonl",
        "oasst2/oasst2_ranked_first_turns.jsonl",
        "aift/mistral7b_m1_pairs.jsonl",
        "aift/mistral7b_m1_generated_prompts.jsonl",
        "seeds/self_instruct_seed_tasks.jsonl",
        "README.md",
    ];
    let Some(srcs) = files
        .iter()
        .map(|f| common::shared_data(f))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let (_t, d) = new_store();
    let mut originals = Vec::new();
    for (f, src) in files.iter().zip(&srcs) {
        let dst = d.join("data").join(f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let bytes = std::fs::read(src).unwrap();
        std::fs::write(&dst, &bytes).unwrap();
        originals.push((format!("data/{f}"), bytes));
    }
    let added = json(&ok(&d, &["add", "data", "--json"]));
    assert_eq!(added["added"].as_array().unwrap().len(), files.len());
    let pairs = added["added"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "data/aift/mistral7b_m1_pairs.jsonl")
        .unwrap();
    assert_eq!(pairs["kind"], "dataset");
    assert_eq!(pairs["rows"], 583);
    // The shipped pre-commit hook refuses the published Mistral pairs: one pair has
    // chosen == rejected. `--no-verify` stores the data exactly as published.
    let err = fails(&d, &["commit", "-m", "real data"], 3);
    assert!(
        err.contains("mistral7b_m1_pairs.jsonl:237: field `chosen`"),
        "{err}"
    );
    ok(&d, &["commit", "--no-verify", "-m", "real data"]);
    // byte-exact through `show REV:PATH`
    for (p, bytes) in &originals {
        let o = srlm(&d)
            .args(["show", &format!("HEAD:{p}")])
            .output()
            .unwrap();
        assert!(o.status.success());
        assert!(
            o.stdout == *bytes,
            "show HEAD:{p} differs from the original"
        );
    }
    // and through checkout after the working tree was damaged
    std::fs::remove_dir_all(d.join("data/oasst2")).unwrap();
    std::fs::write(d.join("data/aift/mistral7b_m1_pairs.jsonl"), b"{}\n").unwrap();
    fails(&d, &["checkout", "HEAD"], 1); // refuses: uncommitted changes
    ok(&d, &["checkout", "--force", "HEAD"]);
    for (p, bytes) in &originals {
        assert!(
            std::fs::read(d.join(p)).unwrap() == *bytes,
            "{p} differs after checkout"
        );
    }
    assert!(ok(&d, &["status"]).contains("nothing to commit"));
    ok(&d, &["fsck"]);
}

#[test]
fn datasets_sharing_rows_store_them_once() {
    let (_t, d) = new_store();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let row = |rng: &mut rand_chacha::ChaCha8Rng, i: usize| {
        let text: String = (0..1000)
            .map(|_| rng.gen_range(b'a'..=b'z') as char)
            .collect();
        format!("{{\"prompt\":\"p{i}\",\"chosen\":\"{text}\",\"rejected\":\"r{i}\"}}\n")
    };
    let a: Vec<String> = (0..4000).map(|i| row(&mut rng, i)).collect();
    let mut b = a.clone();
    b.extend((4000..4200).map(|i| row(&mut rng, i)));
    b.swap(10, 20); // reordered rows are still shared
    let before = store_bytes(&d);
    std::fs::write(d.join("aift_m1.jsonl"), a.concat()).unwrap();
    ok(&d, &["add", "aift_m1.jsonl"]);
    ok(&d, &["commit", "-m", "AIFT(M1)"]);
    let grow_a = store_bytes(&d) - before;
    std::fs::write(d.join("aift_m2.jsonl"), b.concat()).unwrap();
    ok(&d, &["add", "aift_m2.jsonl"]);
    ok(&d, &["commit", "-m", "AIFT(M2)"]);
    let grow_b = store_bytes(&d) - before - grow_a;
    // B has 5% new rows: it must cost a small fraction of A, not another copy
    assert!(
        grow_b * 5 < grow_a,
        "A grew the store by {grow_a} B, B by {grow_b} B"
    );
    assert!(ok(&d, &["show", "HEAD:aift_m2.jsonl"]) == b.concat());
}

#[test]
fn checkpoints_sharing_bytes_share_chunks() {
    let (_t, d) = new_store();
    let a = random_bytes(1, 24 << 20);
    let mut b = a[..5000].to_vec();
    b.extend_from_slice(b"a small header change");
    b.extend_from_slice(&a[5000..]);
    let mid = b.len() / 2;
    b[mid..mid + 65536].copy_from_slice(&random_bytes(2, 65536)); // one tensor changed
    std::fs::create_dir_all(d.join("M1")).unwrap();
    std::fs::create_dir_all(d.join("M2")).unwrap();
    let before = store_bytes(&d);
    std::fs::write(d.join("M1/model.safetensors"), &a).unwrap();
    ok(&d, &["add", "M1"]);
    ok(&d, &["commit", "-m", "M1"]);
    let grow_a = store_bytes(&d) - before;
    assert!(grow_a >= a.len() as u64, "random bytes do not compress");
    std::fs::write(d.join("M2/model.safetensors"), &b).unwrap();
    ok(&d, &["add", "M2/model.safetensors"]);
    ok(&d, &["commit", "-m", "M2"]);
    let grow_b = store_bytes(&d) - before - grow_a;
    // about two or three 1 MiB chunks differ (the changed spots), out of 24 MiB
    assert!(
        grow_b < (a.len() / 4) as u64,
        "M2 grew the store by {grow_b} B"
    );
    let back = srlm(&d)
        .args(["show", "HEAD:M2/model.safetensors"])
        .output()
        .unwrap();
    assert!(back.stdout == b);
}

#[test]
fn unchanged_readd_costs_a_stat() {
    let (_t, d) = new_store();
    std::fs::write(d.join("model.gguf"), random_bytes(3, 8 << 20)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200)); // past the racy-mtime margin
    let first = json(&ok(&d, &["add", "model.gguf", "--json"]));
    assert_eq!(first["added"][0]["cached"], false);
    let again = json(&ok(&d, &["add", "model.gguf", "--json"]));
    assert_eq!(again["added"][0]["cached"], true);
    assert_eq!(again["added"][0]["id"], first["added"][0]["id"]);
    // same size, new content: the stat changed, so it is hashed again
    std::fs::write(d.join("model.gguf"), random_bytes(4, 8 << 20)).unwrap();
    let changed = json(&ok(&d, &["add", "model.gguf", "--json"]));
    assert_eq!(changed["added"][0]["cached"], false);
    assert_ne!(changed["added"][0]["id"], first["added"][0]["id"]);
}

/// Flip one byte in the middle of the only pack.
fn flip_pack_byte(d: &Path) {
    let pack = std::fs::read_dir(d.join(".srlm/packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().unwrap() == "pack")
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();
}

#[test]
fn flipped_byte_is_caught_by_fsck_and_checkout() {
    let (_t, d) = new_store();
    let data = random_bytes(5, 3 << 20);
    std::fs::write(d.join("model.safetensors"), &data).unwrap();
    ok(&d, &["add", "model.safetensors"]);
    ok(&d, &["commit", "-m", "one checkpoint"]);
    ok(&d, &["fsck"]);
    flip_pack_byte(&d);
    let out = run(&d, &["fsck"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("problem:"));
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let err = fails(&d, &["checkout", "--force", "HEAD"], 1);
    assert!(err.contains("corrupt"), "{err}");
    // nothing corrupt (and no temp file) was written out
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(".srlm")]);
    fails(&d, &["show", "HEAD:model.safetensors"], 1);
}

#[test]
fn corrupt_loose_object_is_caught_by_fsck() {
    let (_t, d) = new_store();
    std::fs::write(d.join("a.jsonl"), b"{\"x\":1}\n").unwrap();
    ok(&d, &["add", "a.jsonl"]);
    let c = json(&ok(&d, &["commit", "-m", "x", "--json"]));
    let h = c["commit"].as_str().unwrap();
    let p = d.join(".srlm/objects").join(&h[..2]).join(&h[2..]);
    let mut b = std::fs::read(&p).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x20;
    std::fs::write(&p, b).unwrap();
    let out = run(&d, &["fsck", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let rep = json(&String::from_utf8_lossy(&out.stdout));
    assert!(rep["problems"].to_string().contains(h), "{rep}");
}

#[test]
fn kill_during_add_and_commit_leaves_store_clean() {
    let (_t, d) = new_store();
    let (mut finished, mut seen) = (0, 0);
    for round in 0..8u64 {
        std::fs::write(
            d.join(format!("model{round}.safetensors")),
            random_bytes(round, 12 << 20),
        )
        .unwrap();
        std::fs::write(
            d.join("pairs.jsonl"),
            format!("{{\"round\":{round}}}\n").repeat(20000),
        )
        .unwrap();
        for args in [&["add", "."][..], &["commit", "-m", "round"][..]] {
            let mut child = srlm(&d)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(15 * round + 5));
            let _ = child.kill(); // SIGKILL
            let status = child.wait().unwrap();
            if args[0] == "commit" && status.success() {
                finished += 1;
            }
        }
        let fsck = run(&d, &["fsck"]);
        assert!(
            fsck.status.success(),
            "round {round}: fsck after kill -9:\n{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let log = run(&d, &["log", "--oneline"]);
        let n = String::from_utf8_lossy(&log.stdout).lines().count();
        // a commit killed after its ref moved is there too, so ">=" for those that exited 0
        assert!(
            n >= seen && n >= finished,
            "round {round}: {n} commits, had {seen}, {finished} finished"
        );
        seen = n;
    }
    // the store still works: finish the last round and check it out
    ok(&d, &["add", "."]);
    let _ = run(&d, &["commit", "-m", "final"]);
    ok(&d, &["checkout", "--force", "HEAD"]);
    ok(&d, &["gc"]);
    ok(&d, &["fsck"]);
}

#[test]
fn concurrent_commits_lose_no_ref() {
    let (_t, d) = new_store();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let d = d.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                for k in 0..5 {
                    let f = format!("w{w}_{k}.jsonl");
                    std::fs::write(d.join(&f), format!("{{\"w\":{w},\"k\":{k}}}\n")).unwrap();
                    ok(&d, &["add", &f]);
                    // another worker may have committed our file already: nothing to commit
                    if run(&d, &["commit", "-m", &f]).status.success() {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let done: usize = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(commit_count(&d), done);
    let head = json(&ok(&d, &["show", "--json"]));
    assert_eq!(
        head["files"].as_object().unwrap().len(),
        20,
        "every file reached HEAD"
    );
    ok(&d, &["fsck"]);
}

#[test]
fn bad_input_gives_clear_errors() {
    let (t, d) = new_store();
    let e = fails(&d, &["add", "missing.jsonl"], 1);
    assert!(
        e.contains("missing.jsonl") && e.contains("no such file"),
        "{e}"
    );
    let outside = t
        .path()
        .parent()
        .unwrap()
        .join(format!("srlm-outside-{}", std::process::id()));
    std::fs::write(&outside, b"x").unwrap();
    let e = fails(&d, &["add", outside.to_str().unwrap()], 1);
    std::fs::remove_file(&outside).unwrap();
    assert!(e.contains("outside the working directory"), "{e}");
    let e = fails(&d, &["add", "../x"], 1);
    assert!(e.contains("outside the working directory"), "{e}");
    std::fs::write(d.join("real.jsonl"), b"{}\n").unwrap();
    std::os::unix::fs::symlink(d.join("real.jsonl"), d.join("link.jsonl")).unwrap();
    let e = fails(&d, &["add", "link.jsonl"], 1);
    assert!(e.contains("symlink"), "{e}");
    let e = fails(&d, &["add", "."], 1);
    assert!(e.contains("link.jsonl") && e.contains("symlink"), "{e}");
    std::fs::remove_file(d.join("link.jsonl")).unwrap();
    let e = fails(&d, &["log"], 1);
    assert!(e.contains("no commits yet"), "{e}");
    ok(&d, &["add", "real.jsonl"]);
    ok(&d, &["commit", "-m", "one"]);
    let e = fails(&d, &["show", "nosuchrev"], 1);
    assert!(e.contains("unknown revision 'nosuchrev'"), "{e}");
    let e = fails(&d, &["show", "HEAD~5"], 1);
    assert!(e.contains("past the first commit"), "{e}");
    let e = fails(&d, &["show", "HEAD:nope.jsonl"], 1);
    assert!(e.contains("nope.jsonl"), "{e}");
    let e = fails(&d, &["commit", "-m", "again"], 1);
    assert!(e.contains("nothing to commit"), "{e}");
    let e = fails(&d, &["tag", "bad name"], 1);
    assert!(e.contains("invalid tag name"), "{e}");
    fails(&d, &["commit"], 2); // usage error: -m is required
    let nostore = tempfile::tempdir().unwrap();
    let e = fails(nostore.path(), &["status"], 1);
    assert!(e.contains("not an srlm store"), "{e}");
    let e = fails(&d, &["init"], 1);
    assert!(e.contains("already an srlm store"), "{e}");
    std::fs::write(d.join(".srlm/FORMAT"), "srlm-store 99\n").unwrap();
    let e = fails(&d, &["status"], 1);
    assert!(
        e.contains("format version 99") && e.contains("upgrade srlm"),
        "{e}"
    );
    std::fs::write(d.join(".srlm/FORMAT"), "srlm-store 1\n").unwrap();
    ok(&d, &["fsck"]); // nothing was lost along the way
}

#[test]
fn revisions_tags_branches_and_checkout() {
    let (_t, d) = new_store();
    let mut ids = Vec::new();
    for i in 0..3 {
        std::fs::write(d.join("aift.jsonl"), format!("{{\"i\":{i}}}\n")).unwrap();
        ok(&d, &["add", "aift.jsonl"]);
        ids.push(
            json(&ok(&d, &["commit", "-m", &format!("c{i}"), "--json"]))["commit"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ok(&d, &["tag", "AIFT(M1)", "HEAD~1"]);
    ok(&d, &["tag", "M1", "HEAD~2"]);
    let e = fails(&d, &["tag", "M1"], 1);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(ok(&d, &["show", "AIFT(M1):aift.jsonl"]), "{\"i\":1}\n");
    assert_eq!(ok(&d, &["show", "M1:aift.jsonl"]), "{\"i\":0}\n");
    assert_eq!(
        ok(&d, &["show", &format!("{}:aift.jsonl", &ids[2][..8])]),
        "{\"i\":2}\n"
    );
    assert_eq!(ok(&d, &["show", "HEAD^^:aift.jsonl"]), "{\"i\":0}\n");
    let tags = json(&ok(&d, &["tag", "--json"]));
    assert_eq!(tags["AIFT(M1)"], ids[1]);
    let oneline = ok(&d, &["log", "--oneline"]);
    assert!(
        oneline.lines().nth(1).unwrap().contains("tag: AIFT(M1)"),
        "{oneline}"
    );
    // branch from M1 and commit there; main is untouched
    ok(&d, &["branch", "sweep", "M1"]);
    ok(&d, &["checkout", "sweep"]);
    assert_eq!(
        std::fs::read_to_string(d.join("aift.jsonl")).unwrap(),
        "{\"i\":0}\n"
    );
    std::fs::write(d.join("extra.jsonl"), b"{}\n").unwrap();
    ok(&d, &["add", "extra.jsonl"]);
    ok(&d, &["commit", "-m", "on sweep"]);
    assert_eq!(commit_count(&d), 2);
    let e = fails(&d, &["branch", "-d", "sweep"], 1);
    assert!(e.contains("HEAD points at it"), "{e}");
    ok(&d, &["checkout", "main"]);
    assert!(
        !d.join("extra.jsonl").exists(),
        "files not in main are removed"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("aift.jsonl")).unwrap(),
        "{\"i\":2}\n"
    );
    // restore a single path from an old revision: staged, HEAD stays
    ok(&d, &["checkout", "M1", "--", "aift.jsonl"]);
    assert_eq!(
        std::fs::read_to_string(d.join("aift.jsonl")).unwrap(),
        "{\"i\":0}\n"
    );
    let st = json(&ok(&d, &["status", "--json"]));
    assert_eq!(st["staged"][0]["path"], "aift.jsonl");
    assert_eq!(st["head"]["name"], "main");
    // an uncommitted edit blocks a checkout that would overwrite it
    std::fs::write(d.join("aift.jsonl"), b"{\"edited\":true}\n").unwrap();
    let e = fails(&d, &["checkout", "HEAD", "--", "aift.jsonl"], 1);
    assert!(
        e.contains("uncommitted changes") && e.contains("aift.jsonl"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("aift.jsonl")).unwrap(),
        "{\"edited\":true}\n"
    );
}

#[test]
fn status_reports_staged_unstaged_untracked() {
    let (_t, d) = new_store();
    std::fs::write(d.join("a.jsonl"), b"{}\n").unwrap();
    std::fs::write(d.join("b.bin"), b"bin").unwrap();
    ok(&d, &["add", "a.jsonl", "b.bin"]);
    ok(&d, &["commit", "-m", "two"]);
    assert!(ok(&d, &["status"]).contains("nothing to commit"));
    std::fs::write(d.join("a.jsonl"), b"{}\n{}\n").unwrap();
    std::fs::remove_file(d.join("b.bin")).unwrap();
    std::fs::write(d.join("new.txt"), b"n").unwrap();
    let st = json(&ok(&d, &["status", "--json"]));
    assert_eq!(
        st["unstaged"],
        json(r#"[{"path":"a.jsonl","change":"modified"},{"path":"b.bin","change":"deleted"}]"#)
    );
    assert_eq!(st["untracked"], json(r#"["new.txt"]"#));
    ok(&d, &["add", "a.jsonl", "b.bin"]); // a deleted tracked file is unstaged
    let st = json(&ok(&d, &["status", "--json"]));
    assert_eq!(
        st["staged"],
        json(r#"[{"path":"a.jsonl","change":"modified"},{"path":"b.bin","change":"deleted"}]"#)
    );
    assert_eq!(st["unstaged"], json("[]"));
}

#[test]
fn gc_removes_only_unreachable() {
    let (_t, d) = new_store();
    std::fs::write(d.join("keep.jsonl"), b"{\"keep\":1}\n").unwrap();
    ok(&d, &["add", "keep.jsonl"]);
    ok(&d, &["commit", "-m", "keep"]);
    ok(&d, &["branch", "scratch"]);
    ok(&d, &["checkout", "scratch"]);
    std::fs::write(d.join("big.safetensors"), random_bytes(9, 4 << 20)).unwrap();
    ok(&d, &["add", "big.safetensors"]);
    ok(&d, &["commit", "-m", "scratch work"]);
    ok(&d, &["checkout", "main"]);
    std::fs::write(d.join("staged.jsonl"), b"{\"staged\":1}\n").unwrap();
    ok(&d, &["add", "staged.jsonl"]);
    let dry = json(&ok(&d, &["gc", "--dry-run", "--json"]));
    assert_eq!(dry["loose_removed"], 0, "everything is reachable: {dry}");
    ok(&d, &["branch", "-d", "scratch"]);
    let before = store_bytes(&d);
    let dry = json(&ok(&d, &["gc", "--dry-run", "--json"]));
    assert!(dry["loose_removed"].as_u64().unwrap() >= 3, "{dry}"); // commit, tree, manifest
    assert_eq!(store_bytes(&d), before, "dry run removes nothing");
    let rep = json(&ok(&d, &["gc", "--json"]));
    assert_eq!(rep["loose_removed"], dry["loose_removed"]);
    assert!(
        store_bytes(&d) + (4 << 20) <= before + 4096,
        "the checkpoint's chunks are gone"
    );
    ok(&d, &["fsck"]);
    ok(&d, &["commit", "-m", "staged survived gc"]);
    assert_eq!(ok(&d, &["show", "HEAD:staged.jsonl"]), "{\"staged\":1}\n");
    assert_eq!(ok(&d, &["show", "HEAD~1:keep.jsonl"]), "{\"keep\":1}\n");
}
