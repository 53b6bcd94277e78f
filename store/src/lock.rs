//! The store lock (`.srlm/lock`, an advisory `flock`): a process that changes the store holds it
//! exclusively, readers share it, so any number of `log` / `show` / `status` / `fsck` run side by
//! side while a writer waits for them (and they for it). A waiting process polls up to a timeout
//! (`SRLM_LOCK_TIMEOUT` seconds, default 60; `inf` waits for ever), then fails naming the holder.
//!
//! Readers never write: not even the holder note, so a full disk or a read-only store can still be
//! read. The holder note (`.srlm/lock.holder`: pid and command line) is written by writers after
//! they hold the lock; who really holds the lock is looked up in `/proc/locks`, so a holder that
//! is not srlm, or a note left by an earlier process, is never reported as the holder.
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;

use crate::error::{IoContext, Result, StoreError};

/// How a store is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Shared: the process only reads.
    Read,
    /// Exclusive: the process may change the store.
    Write,
}

/// Held while a `Store` is open; released when dropped (or when the process dies).
pub(crate) struct StoreLock {
    /// `None` for a reader of a store that has no lock file.
    _file: Option<File>,
}

/// The default wait for the lock.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The timeout from `SRLM_LOCK_TIMEOUT` (seconds, fractions allowed, `inf` for no limit),
/// default 60. A value that is not a number of seconds ≥ 0 is an error naming it.
pub(crate) fn timeout_from_env() -> Result<Duration> {
    match std::env::var_os("SRLM_LOCK_TIMEOUT") {
        None => Ok(DEFAULT_TIMEOUT),
        Some(v) => parse_timeout(&v.to_string_lossy()),
    }
}

fn parse_timeout(s: &str) -> Result<Duration> {
    let bad = || StoreError::BadLockTimeout(s.to_string());
    let secs: f64 = s.trim().parse().map_err(|_| bad())?;
    if secs.is_nan() || secs < 0.0 {
        return Err(bad());
    }
    // `inf`, or more seconds than a Duration holds (1e309 parses as inf): no limit.
    Ok(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

fn holder_path(lock: &Path) -> PathBuf {
    lock.with_file_name("lock.holder")
}

pub(crate) fn acquire(path: &Path, mode: LockMode, timeout: Duration) -> Result<StoreLock> {
    let file = match mode {
        LockMode::Write => OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?,
        // A reader opens read-only (flock works on any descriptor) and never creates the file.
        LockMode::Read => match File::open(path) {
            Ok(f) => f,
            // No lock file (deleted, or a store copied without it): no writer holds it, and a
            // reader creates nothing; every write a reader could meet is an atomic rename.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(StoreLock { _file: None }),
            Err(e) => {
                return Err(StoreError::Io {
                    path: path.into(),
                    err: e,
                })
            }
        },
    };
    let start = Instant::now();
    loop {
        let got = match mode {
            LockMode::Write => FileExt::try_lock_exclusive(&file),
            LockMode::Read => FileExt::try_lock_shared(&file),
        }
        .at(path)?;
        if got {
            if mode == LockMode::Write {
                // Who holds it, for the message a waiting process prints. Best effort: a full
                // disk must not stop a writer that frees space (gc).
                let _ = write_holder_note(path);
            }
            return Ok(StoreLock { _file: Some(file) });
        }
        if start.elapsed() >= timeout {
            return Err(StoreError::Locked {
                holder: describe_holder(path),
                waited_s: start.elapsed().as_secs_f64(),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn write_holder_note(lock: &Path) -> std::io::Result<()> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let note = format!("{}\n{}\n", std::process::id(), args.join(" "));
    let hp = holder_path(lock);
    // the temp file goes to `.srlm/tmp`, which the next writer empties if we die here
    let tmp = lock
        .with_file_name("tmp")
        .join(format!("lock.holder.{}", std::process::id()));
    std::fs::write(&tmp, note)?;
    std::fs::rename(&tmp, &hp)
}

/// Who holds the lock: the pids `/proc/locks` names for the lock file's inode, each with its
/// srlm note when the note is that process's, else its command line.
fn describe_holder(lock: &Path) -> String {
    let note = std::fs::read_to_string(holder_path(lock)).unwrap_or_default();
    let mut lines = note.lines();
    let note_pid: Option<u32> = lines.next().and_then(|l| l.trim().parse().ok());
    let note_cmd = lines.next().unwrap_or("").to_string();
    let pids = lock_holders(lock);
    if pids.is_empty() {
        // Released between our try and this look (or no /proc): say what we know.
        return match note_pid {
            Some(p) if process_alive(p) => format!("pid {p}: {note_cmd}"),
            _ => "a process that has just released it".into(),
        };
    }
    pids.iter()
        .map(|&p| {
            if Some(p) == note_pid {
                format!("pid {p}: {note_cmd}")
            } else {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .split('\0')
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                if cmd.is_empty() {
                    format!("pid {p}")
                } else {
                    format!("pid {p}: {cmd}")
                }
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Pids holding a `flock` on the file (from `/proc/locks`, matched by device and inode).
fn lock_holders(lock: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(lock) else {
        return Vec::new();
    };
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let ino = md.ino();
    let mut out = Vec::new();
    for line in text.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; blocked waiters have "->".
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] == "->" || f[1] != "FLOCK" {
            continue;
        }
        let Some(file_ino) = f[5].rsplit(':').next().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if file_ino == ino {
            if let Ok(pid) = f[4].parse::<u32>() {
                if !out.contains(&pid) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_writer_times_out_naming_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = acquire(&p, LockMode::Write, Duration::from_secs(1)).unwrap();
        let e = acquire(&p, LockMode::Write, Duration::from_millis(500))
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        // the time waited, at least the timeout (more on a loaded machine: not an exact figure)
        let waited: f64 = msg
            .split("after ")
            .nth(1)
            .and_then(|r| r.split('s').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no wait time in {msg}"));
        assert!((0.5..5.0).contains(&waited), "{msg}");
        // a reader waits for the writer too
        assert!(acquire(&p, LockMode::Read, Duration::from_millis(50)).is_err());
        drop(held);
        let r1 = acquire(&p, LockMode::Read, Duration::from_millis(100)).unwrap();
        let r2 = acquire(&p, LockMode::Read, Duration::from_millis(100)).unwrap();
        assert!(acquire(&p, LockMode::Write, Duration::from_millis(50)).is_err());
        drop((r1, r2));
        assert!(acquire(&p, LockMode::Write, Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn timeouts_parse_or_fail_clearly() {
        assert_eq!(parse_timeout("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_timeout("inf").unwrap(), Duration::MAX);
        assert_eq!(parse_timeout("1e309").unwrap(), Duration::MAX);
        for bad in ["-1", "NaN", "soon", ""] {
            let e = parse_timeout(bad).unwrap_err().to_string();
            assert!(e.contains("SRLM_LOCK_TIMEOUT"), "{e}");
        }
    }
}
