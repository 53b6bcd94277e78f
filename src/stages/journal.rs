//! The per-row journal of a long stage: every completed request's result is appended as one
//! JSON line the moment it arrives, so a stage killed after 9,000 of 10,000 rows and started
//! again with the same inputs and parameters (the same run key) sends only the 1,000 missing
//! requests. The file lives in the store (`Store::journal_dir`) under the run key, and is removed
//! once the run is recorded.
//!
//! Each line is `{"k": KEY, "h": HASH, "v": VALUE}`: KEY names the request (e.g. a prompt id),
//! HASH is BLAKE3 of the request as sent, so a result is reused only for the very same
//! request. A line cut short by the kill is ignored.
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

use super::record::StageFailure;
use crate::backend::{BackendError, Sink};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

/// An open journal: what earlier attempts finished, and the file new results are added to.
pub struct Journal {
    path: Option<PathBuf>,
    file: Option<File>,
    done: HashMap<String, (String, Value)>,
    /// Results reused from an earlier attempt.
    pub reused: usize,
    /// Requests handed to the backend (not found in the journal).
    pub sent: usize,
}

/// The hash a request is journalled under.
pub fn request_hash<T: Serialize>(request: &T) -> String {
    let bytes = serde_json::to_vec(request).expect("a request serialises");
    blake3::hash(&bytes).to_hex()[..32].to_string()
}

impl Journal {
    /// A journal that keeps nothing (replays, tests).
    pub fn none() -> Self {
        Journal {
            path: None,
            file: None,
            done: HashMap::new(),
            reused: 0,
            sent: 0,
        }
    }

    /// Opens (or creates) the journal at `path`, reading what it holds.
    pub fn open(path: Option<&Path>) -> Result<Self, JournalError> {
        let Some(path) = path else {
            return Ok(Self::none());
        };
        let io = |err| JournalError::Io {
            path: path.to_path_buf(),
            err,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut done = HashMap::new();
        match File::open(path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    let Ok(line) = line else { break };
                    // a partial last line (the kill came mid-write) is simply not done
                    let Ok(v) = serde_json::from_str::<Value>(&line) else {
                        continue;
                    };
                    if let (Some(k), Some(h), Some(val)) =
                        (v["k"].as_str(), v["h"].as_str(), v.get("v"))
                    {
                        done.insert(k.to_string(), (h.to_string(), val.clone()));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // start on a fresh line whatever the last attempt left
        file.write_all(b"\n").map_err(io)?;
        Ok(Journal {
            path: Some(path.to_path_buf()),
            file: Some(file),
            done,
            reused: 0,
            sent: 0,
        })
    }

    /// The result journalled for request `key` with this `hash`, if any.
    pub fn get<T: DeserializeOwned>(&mut self, key: &str, hash: &str) -> Option<T> {
        let (h, v) = self.done.get(key)?;
        if h != hash {
            return None;
        }
        let t = serde_json::from_value(v.clone()).ok()?;
        self.reused += 1;
        Some(t)
    }

    /// Appends the result of request `key` (written through at once).
    pub fn put<T: Serialize>(
        &mut self,
        key: &str,
        hash: &str,
        value: &T,
    ) -> Result<(), JournalError> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        let line = serde_json::json!({"k": key, "h": hash, "v": value});
        let mut bytes = serde_json::to_vec(&line).expect("a result serialises");
        bytes.push(b'\n');
        f.write_all(&bytes)
            .and_then(|_| f.sync_data())
            .map_err(|err| JournalError::Io {
                path: self.path.clone().unwrap_or_default(),
                err,
            })
    }

    /// Removes the journal (the run is recorded: its outputs hold everything).
    pub fn finish(self) -> Result<(), JournalError> {
        if let Some(path) = self.path {
            drop(self.file);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(JournalError::Io { path, err: e })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Runs a batch through a backend with the journal: results already journalled (same key,
/// same request) are taken from it, the rest go to `run` and are journalled as they arrive.
/// Returns every result in request order, or the first failure (by position) naming its
/// request's key; what finished stays journalled either way.
pub fn journalled<R, T>(
    journal: &mut Journal,
    keys: &[String],
    requests: &[R],
    run: impl FnOnce(&[R], &mut Sink<T>),
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<T>, StageFailure>
where
    R: Serialize + Clone,
    T: Serialize + DeserializeOwned,
{
    let hashes: Vec<String> = requests.iter().map(request_hash).collect();
    let mut out: Vec<Option<T>> = keys
        .iter()
        .zip(&hashes)
        .map(|(k, h)| journal.get(k, h))
        .collect();
    let missing: Vec<usize> = (0..requests.len()).filter(|&i| out[i].is_none()).collect();
    let mut done = requests.len() - missing.len();
    progress(done);
    journal.sent += missing.len();
    if !missing.is_empty() {
        let todo: Vec<R> = missing.iter().map(|&i| requests[i].clone()).collect();
        let mut first: Option<(usize, String)> = None;
        let mut fail = |i: usize, msg: String, cancelled: bool| {
            // a request cancelled by an earlier failure is not the news
            if cancelled && first.is_some() {
                return;
            }
            if first.as_ref().map_or(true, |(j, _)| i < *j) {
                first = Some((i, msg));
            }
        };
        run(&todo, &mut |j, r| {
            let i = missing[j];
            match r {
                Ok(v) => {
                    if let Err(e) = journal.put(&keys[i], &hashes[i], &v) {
                        fail(i, e.to_string(), false);
                    }
                    out[i] = Some(v);
                    done += 1;
                    progress(done);
                }
                Err(e) => {
                    let cancelled = matches!(e, BackendError::Cancelled { .. });
                    fail(i, e.to_string(), cancelled)
                }
            }
        });
        if let Some((i, msg)) = first {
            let kept = out.iter().filter(|o| o.is_some()).count();
            return Err(format!(
                "{}: {msg} ({kept} of {} done are kept; run the stage again to send only the rest)",
                keys[i],
                requests.len()
            )
            .into());
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every request answered"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_survive_a_reopen_and_a_cut_line_or_changed_request_is_not_reused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("j/k.jsonl");
        let mut j = Journal::open(Some(&p)).unwrap();
        j.put("a", "h1", &vec!["x".to_string()]).unwrap();
        j.put("b", "h2", &vec!["y".to_string()]).unwrap();
        drop(j);
        // a kill in the middle of a write
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"k":"c","h":"h3","v":["#).unwrap();
        drop(f);
        let mut j = Journal::open(Some(&p)).unwrap();
        assert_eq!(j.get::<Vec<String>>("a", "h1"), Some(vec!["x".into()]));
        assert_eq!(j.get::<Vec<String>>("b", "other"), None);
        assert_eq!(j.get::<Vec<String>>("c", "h3"), None);
        assert_eq!(j.reused, 1);
        j.put("c", "h3", &vec!["z".to_string()]).unwrap();
        drop(j);
        let mut j = Journal::open(Some(&p)).unwrap();
        assert_eq!(j.get::<Vec<String>>("c", "h3"), Some(vec!["z".into()]));
        j.finish().unwrap();
        assert!(!p.exists());
    }
}
