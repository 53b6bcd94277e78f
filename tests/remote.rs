//! Remotes, end to end through the real binary: one suite run against a `file://` remote
//! (always) and against a real 3-node Garage cluster on 127.0.0.1 (when `garage` is installed;
//! CI installs it and sets SRLM_REQUIRE_GARAGE=1). Push, clone, fsck, byte-identical checkout,
//! incremental pushes that send only the difference, concurrent pushers, kills, bad input.
mod common;
#[path = "common/garage.rs"]
mod garage;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

/// Where remotes live: a URL base and the environment a client needs.
struct Target {
    base: String,
    env: Vec<(String, String)>,
}

impl Target {
    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    fn cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = common::srlm_in(dir);
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.cmd(dir, args).output().expect("srlm runs")
    }

    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.run(dir, args);
        assert!(
            o.status.success(),
            "srlm {args:?} failed ({:?}):\n{}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn fails(&self, dir: &Path, args: &[&str]) -> String {
        let o = self.run(dir, args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(
            o.status.code(),
            Some(1),
            "srlm {args:?} should fail:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    fn json(&self, dir: &Path, args: &[&str]) -> serde_json::Value {
        let out = self.ok(dir, args);
        serde_json::from_str(out.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
    }
}

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn new_store(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    common::ok(&d, &["init"]);
    d
}

fn commit_files(d: &Path, files: &[(&str, &[u8])], msg: &str) {
    for (p, b) in files {
        std::fs::write(d.join(p), b).unwrap();
        common::ok(d, &["add", p]);
    }
    common::ok(d, &["commit", "-m", msg]);
}

fn dataset(rows: usize, tag: &str) -> Vec<u8> {
    (0..rows)
        .map(|i| format!("{{\"prompt\":\"p{i}\",\"response\":\"{tag} {i}\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

fn head(d: &Path) -> String {
    let log: serde_json::Value =
        serde_json::from_str(common::ok(d, &["log", "--json"]).trim()).unwrap();
    log[0]["id"]
        .as_str()
        .or_else(|| log[0]["commit"].as_str())
        .unwrap_or_else(|| panic!("log --json: {log}"))
        .to_string()
}

fn fsck_clean(d: &Path) {
    common::ok(d, &["fsck"]);
}

/// Push a store with history and tags, clone it, compare everything.
fn push_clone_round_trip(t: &Target, root: &Path) {
    let a = new_store(root, "rt-origin");
    let model = random_bytes(1, 1_500_000);
    commit_files(
        &a,
        &[("data.jsonl", &dataset(300, "a")), ("m.gguf", &model)],
        "one",
    );
    common::ok(&a, &["tag", "M1"]);
    commit_files(&a, &[("data.jsonl", &dataset(320, "b"))], "two");
    // a recorded run, so lineage and reproduce have something to follow on the clone
    common::ok(
        &a,
        &[
            "run",
            "--stage",
            "sort",
            "--input",
            "data=data.jsonl",
            "--output",
            "sorted.jsonl",
            "--",
            "sh",
            "-c",
            "sort data.jsonl > sorted.jsonl",
        ],
    );
    t.ok(&a, &["remote", "add", "origin", &t.url("rt")]);
    let listed = t.ok(&a, &["remote", "list"]);
    assert!(listed.contains(&t.url("rt")), "{listed}");
    let rep = t.json(&a, &["push", "--json"]);
    assert!(rep["packs_sent"].as_u64().unwrap() >= 1, "{rep}");
    assert!(rep["bytes_sent"].as_u64().unwrap() > 1_000_000, "{rep}");
    assert_eq!(
        rep["updated"].as_array().unwrap().len(),
        2,
        "main and M1: {rep}"
    );
    // nothing new: nothing sent
    let again = t.json(&a, &["push", "--json"]);
    assert_eq!(again["bytes_sent"], 0, "{again}");
    assert_eq!(again["up_to_date"].as_array().unwrap().len(), 2, "{again}");
    let b = root.join("rt-clone");
    let c = t.json(root, &["clone", &t.url("rt"), "rt-clone", "--json"]);
    assert!(c["bytes_received"].as_u64().unwrap() > 1_000_000, "{c}");
    fsck_clean(&b);
    assert_eq!(std::fs::read(b.join("m.gguf")).unwrap(), model);
    assert_eq!(
        std::fs::read(b.join("data.jsonl")).unwrap(),
        dataset(320, "b")
    );
    assert_eq!(head(&a), head(&b));
    assert_eq!(
        common::ok(&a, &["log", "--json"]),
        common::ok(&b, &["log", "--json"]),
        "the clone has the same history"
    );
    // lineage and reproduce work on the clone as on the origin
    assert_eq!(
        common::ok(&a, &["lineage", "sorted.jsonl", "--format", "json"]),
        common::ok(&b, &["lineage", "sorted.jsonl", "--format", "json"]),
        "the clone has the same lineage"
    );
    let rep = common::ok(&b, &["reproduce", "sorted.jsonl", "--last", "1"]);
    assert!(rep.contains("identical"), "{rep}");
    common::ok(&b, &["checkout", "M1"]);
    assert_eq!(
        std::fs::read(b.join("data.jsonl")).unwrap(),
        dataset(300, "a")
    );
    let remotes = t.ok(&b, &["remote", "list", "--json"]);
    assert!(remotes.contains("origin"), "{remotes}");
    assert!(
        !remotes.contains("AWS")
            && !std::fs::read_to_string(b.join(".srlm/remotes"))
                .unwrap()
                .contains("SECRET"),
        "no credentials stored"
    );
}

/// A second version sharing most bytes sends about the difference; a clone pulls it.
fn incremental_push_and_pull(t: &Target, root: &Path) {
    let a = new_store(root, "inc-origin");
    let mut model = random_bytes(2, 4_000_000);
    commit_files(&a, &[("m.safetensors", &model)], "v1");
    t.ok(&a, &["remote", "add", "origin", &t.url("inc")]);
    let first = t.json(&a, &["push", "--json"]);
    let first_bytes = first["bytes_sent"].as_u64().unwrap();
    assert!(first_bytes > 3_500_000, "{first}");
    let b = root.join("inc-clone");
    t.ok(root, &["clone", &t.url("inc"), "inc-clone"]);
    // change the last 10%
    let n = model.len();
    model[n - n / 10..].copy_from_slice(&random_bytes(3, n / 10));
    commit_files(&a, &[("m.safetensors", &model)], "v2");
    let second = t.json(&a, &["push", "--json"]);
    let second_bytes = second["bytes_sent"].as_u64().unwrap();
    assert!(
        second_bytes * 4 < first_bytes,
        "second push sent {second_bytes} of {first_bytes}: {second}"
    );
    let pulled = t.json(&b, &["pull", "--json"]);
    assert!(
        pulled["bytes_received"].as_u64().unwrap() * 4 < first_bytes,
        "pull received only the difference: {pulled}"
    );
    assert_eq!(std::fs::read(b.join("m.safetensors")).unwrap(), model);
    assert_eq!(head(&a), head(&b));
    fsck_clean(&b);
    // fetch records the remote-tracking branch
    let f = t.json(&b, &["fetch", "--json"]);
    assert_eq!(f["objects_received"], 0, "{f}");
}

/// Two pushers of one branch at once: exactly one wins, the other is told, nothing is lost.
fn concurrent_pushers(t: &Target, root: &Path) {
    let a = new_store(root, "cc-origin");
    commit_files(&a, &[("base.txt", b"base")], "base");
    t.ok(&a, &["remote", "add", "origin", &t.url("cc")]);
    t.ok(&a, &["push"]);
    let mut heads = Vec::new();
    for who in ["x", "y"] {
        let d = root.join(format!("cc-{who}"));
        t.ok(root, &["clone", &t.url("cc"), &format!("cc-{who}")]);
        commit_files(&d, &[(&format!("{who}.txt"), who.as_bytes())], who);
        heads.push((d.clone(), head(&d)));
    }
    let kids: Vec<_> = heads
        .iter()
        .map(|(d, _)| {
            t.cmd(d, &["push"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = kids
        .into_iter()
        .map(|k| k.wait_with_output().unwrap())
        .collect();
    let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one pusher wins: {outs:?}");
    let (w, l) = (won[0], 1 - won[0]);
    let err = String::from_utf8_lossy(&outs[l].stderr);
    assert!(
        err.contains("lost a race") || err.contains("fetch first") || err.contains("fast-forward"),
        "{err}"
    );
    // a fresh clone has the winner's commit; the loser still has its own
    t.ok(root, &["clone", &t.url("cc"), "cc-fresh"]);
    let fresh = root.join("cc-fresh");
    assert_eq!(head(&fresh), heads[w].1);
    fsck_clean(&fresh);
    let loser = &heads[l].0;
    assert_eq!(head(loser), heads[l].1, "the losing commit is kept");
    t.ok(loser, &["fetch"]);
    let e = t.fails(loser, &["push"]);
    assert!(e.contains("fast-forward"), "{e}");
    t.ok(loser, &["push", "--force"]);
    t.ok(&fresh, &["fetch"]);
    t.fails(&fresh, &["pull"]); // fresh's main is the old winner, origin moved sideways
}

fn bad_inputs(t: &Target, root: &Path) {
    let a = new_store(root, "bad-origin");
    commit_files(&a, &[("f.txt", b"x")], "x");
    let e = t.fails(&a, &["remote", "add", "up", "ftp://host/x"]);
    assert!(e.contains("unknown remote URL scheme"), "{e}");
    let e = t.fails(&a, &["push", "nowhere"]);
    assert!(e.contains("no remote named"), "{e}");
    let e = t.fails(root, &["clone", &t.url("never-pushed"), "bad-clone"]);
    assert!(e.contains("empty") || e.contains("does not exist"), "{e}");
    assert!(!root.join("bad-clone/.srlm").exists(), "no half clone left");
}

/// `push --delete` removes a remote tag or branch; a fresh clone no longer has it.
fn delete_remote_refs(t: &Target, root: &Path) {
    let a = new_store(root, "del-origin");
    commit_files(&a, &[("f.txt", b"one")], "one");
    common::ok(&a, &["tag", "T1"]);
    common::ok(&a, &["branch", "side"]);
    t.ok(&a, &["remote", "add", "origin", &t.url("del")]);
    t.ok(&a, &["push", "origin", "main", "side", "T1"]);
    let rep = t.json(&a, &["push", "origin", "--delete", "T1", "side", "--json"]);
    assert_eq!(rep["updated"].as_array().unwrap().len(), 2, "{rep}");
    t.ok(root, &["clone", &t.url("del"), "del-clone"]);
    let c = root.join("del-clone");
    let tags = common::ok(&c, &["tag"]);
    assert!(!tags.contains("T1"), "{tags}");
    let f = t.json(&c, &["fetch", "--json"]);
    assert!(!f.to_string().contains("side"), "{f}");
    assert!(
        common::ok(&a, &["tag"]).contains("T1"),
        "the local tag stays"
    );
    let e = t.fails(&a, &["push", "origin", "--delete", "T1"]);
    assert!(e.contains("no branch or tag named"), "{e}");
}

fn run_suite(t: &Target, root: &Path) {
    push_clone_round_trip(t, root);
    delete_remote_refs(t, root);
    incremental_push_and_pull(t, root);
    concurrent_pushers(t, root);
    bad_inputs(t, root);
}

fn file_target(root: &Path) -> Target {
    let remotes = root.join("remotes");
    std::fs::create_dir_all(&remotes).unwrap();
    Target {
        base: format!("file://{}", remotes.display()),
        env: vec![],
    }
}

#[test]
fn file_remote_suite() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    run_suite(&file_target(&root), &root);
}

#[test]
fn file_remote_corruption_and_newer_format_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let target = file_target(&root);
    let a = new_store(&root, "o");
    commit_files(&a, &[("d.jsonl", &dataset(50, "z"))], "z");
    target.ok(&a, &["remote", "add", "origin", &target.url("r")]);
    target.ok(&a, &["push"]);
    let rdir = root.join("remotes/r");
    // a flipped byte in the bundle: reported by path, nothing written
    let bundle = std::fs::read_dir(rdir.join("bundles"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let good = std::fs::read(&bundle).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x20;
    std::fs::write(&bundle, &bad).unwrap();
    let e = target.fails(&root, &["clone", &target.url("r"), "c1"]);
    assert!(e.contains("corrupt") && e.contains("bundles/"), "{e}");
    assert!(!root.join("c1/.srlm").exists());
    std::fs::write(&bundle, &good).unwrap();
    // a flipped byte in a pack
    let pack = std::fs::read_dir(rdir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().unwrap() == "pack")
        .unwrap();
    let good_pack = std::fs::read(&pack).unwrap();
    let mut bad = good_pack.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x01;
    std::fs::write(&pack, &bad).unwrap();
    let e = target.fails(&root, &["clone", &target.url("r"), "c2"]);
    assert!(e.contains("corrupt") && e.contains("packs/"), "{e}");
    std::fs::write(&pack, &good_pack).unwrap();
    // a newer remote format
    std::fs::write(rdir.join("FORMAT"), "srlm-remote 99\n").unwrap();
    let e = target.fails(&root, &["clone", &target.url("r"), "c3"]);
    assert!(e.contains("newer"), "{e}");
    std::fs::write(rdir.join("FORMAT"), "srlm-remote 1\n").unwrap();
    // a remote ref naming an object the remote does not hold (its bundle is gone)
    std::fs::remove_file(&bundle).unwrap();
    let e = target.fails(&root, &["clone", &target.url("r"), "c5"]);
    assert!(
        e.contains("does not hold") || e.contains("bundles/"),
        "names what is missing: {e}"
    );
    assert!(!root.join("c5/.srlm").exists(), "no half clone left");
    std::fs::write(&bundle, &good).unwrap();
    target.ok(&root, &["clone", &target.url("r"), "c4"]);
    fsck_clean(&root.join("c4"));
}

#[test]
fn garage_remote_suite() {
    let Some(cluster) = garage::Cluster::start("srlm-test") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    let target = Target {
        base: format!("s3://{}", cluster.bucket),
        env: cluster.env(),
    };
    // the cluster answers once the layout has spread: wait for an "empty remote" answer
    let t0 = Instant::now();
    loop {
        let o = target.run(&root, &["clone", &target.url("probe"), "probe"]);
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        if e.contains("empty") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "garage never answered: {e}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    run_suite(&target, &root);
    lazy_clone(&target, &root);
    kill_during_push_and_pull(&target, &root, 600);
    // a missing bucket, wrong credentials, an endpoint that is down: clear errors, quickly
    let a = root.join("bad-origin");
    let e = target.fails(&root, &["clone", "s3://no-such-bucket", "nb"]);
    assert!(
        e.contains("does not exist") || e.contains("no-such-bucket"),
        "{e}"
    );
    let mut wrong = target.cmd(&root, &["clone", &target.url("rt"), "wc"]);
    wrong.env("AWS_SECRET_ACCESS_KEY", "0".repeat(64));
    let o = wrong.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !e.contains(&cluster.secret),
        "the secret is never printed: {e}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = Instant::now();
    let mut down = target.cmd(&a, &["fetch"]);
    let o = {
        target.ok(
            &a,
            &[
                "remote",
                "add",
                "down",
                "s3://srlm-test/x",
                "--endpoint",
                &format!("http://127.0.0.1:{port}"),
            ],
        );
        down.args(["down"]);
        down.output().unwrap()
    };
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no answer from the endpoint"), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(90),
        "bounded: {:?}",
        t0.elapsed()
    );
    drop(cluster);
}

/// `--lazy` fetches only the checked-out version's file bytes; older versions come on demand.
#[test]
fn file_remote_lazy_clone_fetches_file_bytes_when_asked() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    lazy_clone(&file_target(&root), &root);
}

fn lazy_clone(target: &Target, root: &Path) {
    let a = new_store(root, "lz");
    let versions: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(10 + i, 600_000)).collect();
    for (i, v) in versions.iter().enumerate() {
        let d = dataset(40 + 10 * i, &format!("v{i}"));
        commit_files(&a, &[("m.gguf", v), ("d.jsonl", &d)], &format!("v{i}"));
    }
    target.ok(&a, &["remote", "add", "origin", &target.url("lz")]);
    target.ok(&a, &["push"]);
    let full = target.json(root, &["clone", &target.url("lz"), "full", "--json"]);
    let lazy = target.json(
        root,
        &["clone", &target.url("lz"), "lazy", "--lazy", "--json"],
    );
    let (fb, lb) = (
        full["bytes_received"].as_u64().unwrap(),
        lazy["bytes_received"].as_u64().unwrap(),
    );
    // the lazy clone fetched the checked-out version's bytes only
    assert!(
        fb > 2_000_000 && lb > 500_000 && lb < 900_000,
        "full {fb}, lazy {lb}"
    );
    let l = root.join("lazy");
    assert_eq!(std::fs::read(l.join("m.gguf")).unwrap(), versions[3]);
    fsck_clean(&l);
    // show and diff of versions not fetched yet fetch what they read
    let o = target.run(&l, &["show", "HEAD~2:m.gguf"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, versions[1], "show fetched HEAD~2's bytes");
    let d = target.ok(&l, &["diff", "HEAD~3", "HEAD", "--json"]);
    assert!(d.contains("d.jsonl"), "{d}");
    target.ok(&l, &["checkout", "HEAD~3"]);
    assert_eq!(std::fs::read(l.join("m.gguf")).unwrap(), versions[0]);
    fsck_clean(&l);
    // without a checkout a lazy clone moves metadata only; checkout fetches what it writes
    let meta = target.json(
        root,
        &[
            "clone",
            &target.url("lz"),
            "meta",
            "--lazy",
            "--no-checkout",
            "--json",
        ],
    );
    let mb = meta["bytes_received"].as_u64().unwrap();
    assert!(mb < 100_000, "metadata only: {meta}");
    let m = root.join("meta");
    assert!(!m.join("m.gguf").exists());
    assert_eq!(head(&m), head(&a));
    fsck_clean(&m);
    // (as after `git clone --no-checkout`, the empty staging area reads as staged deletions)
    target.ok(&m, &["checkout", "--force", "main"]);
    assert_eq!(std::fs::read(m.join("m.gguf")).unwrap(), versions[3]);
    let st = target.ok(&m, &["status", "--json"]);
    assert!(!st.contains("m.gguf"), "clean after checkout: {st}");
}

/// kill -9 at random instants during push and during pull; the re-run succeeds and a fresh
/// clone is fsck clean.
#[test]
fn file_remote_survives_kill_during_push_and_pull() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().canonicalize().unwrap();
    kill_during_push_and_pull(&file_target(&root), &root, 150);
}

/// Ten kill -9 rounds during push and ten during pull, each at a random instant within
/// `window_ms` of the start (a slower remote needs a wider window to land inside the transfer).
fn kill_during_push_and_pull(target: &Target, root: &Path, window_ms: u64) {
    let a = new_store(root, "k");
    target.ok(&a, &["remote", "add", "origin", &target.url("k")]);
    commit_files(&a, &[("m.bin", &random_bytes(99, 300_000))], "start");
    target.ok(&a, &["push"]);
    target.ok(root, &["clone", &target.url("k"), "kc"]);
    let kc = root.join("kc");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for round in 0..10u64 {
        commit_files(
            &a,
            &[("m.bin", &random_bytes(100 + round, 3_000_000))],
            &format!("r{round}"),
        );
        let mut kid = target.cmd(&a, &["push"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.next_u64() % window_ms));
        let _ = kid.kill();
        let _ = kid.wait();
        target.ok(&a, &["push"]);
        let mut kid = target.cmd(&kc, &["pull"]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.next_u64() % window_ms));
        let _ = kid.kill();
        let _ = kid.wait();
        fsck_clean(&kc);
        target.ok(&kc, &["pull"]);
        assert_eq!(head(&kc), head(&a));
    }
    target.ok(root, &["clone", &target.url("k"), "kf"]);
    fsck_clean(&root.join("kf"));
}
