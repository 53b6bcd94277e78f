//! kill -9 at random instants (seeded) during add, commit, gc and checkout, 60 kills in all,
//! bounded in time: after each kill `fsck` is clean, no ref names a missing object, every
//! committed version still checks out byte for byte, and the interrupted command run again
//! succeeds.
mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{ok, run, srlm_in};
use rand::{Rng, RngCore, SeedableRng};

fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand_chacha::ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Start `srlm ARGS`, kill it after `after`; whether it had already finished.
fn kill_after(d: &Path, args: &[&str], after: Duration) -> bool {
    let mut child = srlm_in(d)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let done = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    child.wait().unwrap();
    done
}

fn assert_clean(d: &Path, what: &str) {
    let o = run(d, &["fsck"]);
    assert!(
        o.status.success(),
        "{what}: fsck after kill -9:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn kill_nine_at_random_instants_leaves_every_store_consistent() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().canonicalize().unwrap();
    ok(&d, &["init"]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let started = Instant::now();
    // what each commit (by message) must check out as
    let mut versions: Vec<(String, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut kills = 0;
    for round in 0..15u64 {
        if started.elapsed() > Duration::from_secs(240) {
            break; // bounded: a slow machine does fewer rounds, each still checked
        }
        let model = bytes(round, 6 << 20);
        let pairs = format!("{{\"prompt\":\"p\",\"chosen\":\"a{round}\",\"rejected\":\"b\"}}\n")
            .repeat(5000)
            .into_bytes();
        std::fs::write(d.join("m.safetensors"), &model).unwrap();
        std::fs::write(d.join("pairs.jsonl"), &pairs).unwrap();
        let msg = format!("round {round}");
        for args in [
            vec!["add", "."],
            vec!["commit", "-m", msg.as_str()],
            vec!["gc"],
            vec!["checkout", "--force", "HEAD~1"],
        ] {
            if args[0] == "checkout" && versions.len() < 2 {
                continue;
            }
            let after = Duration::from_millis(rng.gen_range(2..120));
            kill_after(&d, &args, after);
            kills += 1;
            assert_clean(
                &d,
                &format!("round {round}, {args:?} killed after {after:?}"),
            );
            // the interrupted command, run again, succeeds (a commit may have landed)
            let again = run(&d, &args);
            if args[0] == "commit" {
                let log = ok(&d, &["log", "--oneline"]);
                assert!(log.contains(&msg), "round {round}: commit lost:\n{log}");
            } else {
                assert!(
                    again.status.success(),
                    "{args:?} after a kill: {}",
                    String::from_utf8_lossy(&again.stderr)
                );
            }
            if args[0] == "commit" {
                versions.push((msg.clone(), model.clone(), pairs.clone()));
            }
            if args[0] == "checkout" {
                ok(&d, &["checkout", "--force", "main"]);
            }
        }
    }
    assert!(
        kills >= 50 || started.elapsed() > Duration::from_secs(240),
        "{kills} kills"
    );
    // every committed version checks out byte for byte
    let log = ok(&d, &["log", "--oneline"]);
    for (msg, model, pairs) in &versions {
        let line = log.lines().find(|l| l.ends_with(msg.as_str())).unwrap();
        let id = line.split_whitespace().next().unwrap();
        ok(&d, &["checkout", "--force", id]);
        assert_eq!(
            &std::fs::read(d.join("m.safetensors")).unwrap(),
            model,
            "{msg}"
        );
        assert_eq!(
            &std::fs::read(d.join("pairs.jsonl")).unwrap(),
            pairs,
            "{msg}"
        );
    }
    ok(&d, &["checkout", "--force", "main"]);
    ok(&d, &["gc"]);
    assert_clean(&d, "the end");
}
