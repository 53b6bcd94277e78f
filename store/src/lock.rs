//! The store lock: one srlm process at a time works on a store. A second one waits (polling)
//! up to a timeout (`SRLM_LOCK_TIMEOUT` seconds, default 60), then fails naming the holder.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;

use crate::error::{IoContext, Result, StoreError};

/// Held while a `Store` is open; released when dropped (or when the process dies).
pub(crate) struct StoreLock {
    _file: File,
}

/// The timeout from `SRLM_LOCK_TIMEOUT` (seconds), default 60.
pub(crate) fn timeout_from_env() -> Duration {
    std::env::var("SRLM_LOCK_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

pub(crate) fn acquire(path: &Path, timeout: Duration) -> Result<StoreLock> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at(path)?;
    let start = Instant::now();
    loop {
        if FileExt::try_lock_exclusive(&file).at(path)? {
            // Who holds it, for the message a waiting process prints.
            let me = format!(
                "pid {}: {}",
                std::process::id(),
                std::env::args().collect::<Vec<_>>().join(" ")
            );
            file.set_len(0).at(path)?;
            file.rewind().at(path)?;
            file.write_all(me.as_bytes()).at(path)?;
            return Ok(StoreLock { _file: file });
        }
        if start.elapsed() >= timeout {
            let mut holder = String::new();
            let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut holder));
            let holder = if holder.trim().is_empty() {
                "unknown".into()
            } else {
                holder
            };
            return Err(StoreError::Locked {
                holder: holder.trim().to_string(),
                waited_s: start.elapsed().as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_times_out_with_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock");
        let held = acquire(&p, Duration::from_secs(1)).unwrap();
        let e = acquire(&p, Duration::from_millis(100)).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        assert!(acquire(&p, Duration::from_millis(100)).is_ok());
    }
}
