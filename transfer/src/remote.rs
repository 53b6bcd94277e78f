//! [`Remote`]: a bucket plus what it knows of it: its format, its op records (cached locally
//! under `.srlm/cache/remote-ops`, verified by name), the refs they give and which pack holds
//! each piece (indexes cached under `.srlm/cache/remote-idx`).
use std::collections::HashMap;

use srlm_store::{ObjectId, Store};

use crate::bucket::Bucket;
use crate::config::RemoteConfig;
use crate::error::{Result, TransferError};
use crate::layout::{self, OpRecord, State, FORMAT_KEY, REMOTE_FORMAT};

/// A remote, opened.
pub struct Remote {
    pub name: String,
    pub bucket: Bucket,
}

impl Remote {
    pub fn open(name: &str, cfg: &RemoteConfig) -> Result<Remote> {
        Ok(Remote {
            name: name.into(),
            bucket: Bucket::open(cfg)?,
        })
    }

    pub fn url(&self) -> &str {
        &self.bucket.url
    }

    /// Check the remote's FORMAT. A remote without one is empty (`Ok(false)`) or not srlm's.
    pub fn check_format(&self) -> Result<bool> {
        match self.bucket.get(FORMAT_KEY)? {
            Some(b) => {
                let text = String::from_utf8_lossy(&b);
                let v = text
                    .trim()
                    .strip_prefix("srlm-remote ")
                    .and_then(|n| n.parse::<u32>().ok());
                match v {
                    Some(v) if v <= REMOTE_FORMAT => Ok(true),
                    _ => Err(TransferError::NewerFormat {
                        url: self.url().into(),
                        found: format!("{:?}", text.trim()),
                        supported: REMOTE_FORMAT,
                    }),
                }
            }
            None => {
                // list first: a missing bucket shows here
                let any = self.bucket.list("")?;
                if any.is_empty() {
                    Ok(false)
                } else {
                    Err(TransferError::NotARemote {
                        url: self.url().into(),
                    })
                }
            }
        }
    }

    /// Make an empty remote an srlm remote.
    pub fn init_format(&self) -> Result<()> {
        self.bucket.put(
            FORMAT_KEY,
            format!("srlm-remote {REMOTE_FORMAT}\n").into_bytes(),
        )
    }

    /// Read every op record (new ones downloaded, known ones from the cache) and replay them.
    pub fn state(&self, store: &Store) -> Result<State> {
        let cache = store.cache_dir("remote-ops");
        let mut ops = Vec::new();
        for l in self.bucket.list("ops")? {
            let Some(name) = l.name.strip_suffix(".json") else {
                continue;
            };
            let cached = cache.join(format!("{name}.json"));
            let rec = match std::fs::read(&cached)
                .ok()
                .and_then(|b| OpRecord::decode(self.url(), name, &b).ok())
            {
                Some(r) => r,
                None => {
                    let b = self
                        .bucket
                        .get(&format!("ops/{name}.json"))?
                        .ok_or_else(|| TransferError::Storage {
                            url: self.url().into(),
                            what: format!("reading ops/{name}.json"),
                            detail: "listed but gone".into(),
                        })?;
                    let r = OpRecord::decode(self.url(), name, &b)?;
                    let _ = std::fs::create_dir_all(&cache);
                    let _ = std::fs::write(&cached, &b); // a cache: losing it costs a download
                    r
                }
            };
            ops.push((name.to_string(), l.modified_ns, rec));
        }
        Ok(layout::replay(ops))
    }

    /// Which remote pack holds each piece: every `packs/*.idx` (same-named local packs and
    /// cached indexes are not downloaded again; each index is checked against its name).
    pub fn pieces(&self, store: &Store) -> Result<HashMap<ObjectId, String>> {
        let local: std::collections::HashSet<String> = store.pack_names()?.into_iter().collect();
        let cache = store.cache_dir("remote-idx");
        let mut out = HashMap::new();
        for l in self.bucket.list("packs")? {
            let Some(name) = l.name.strip_suffix(".idx") else {
                continue;
            };
            let ids = if local.contains(name) {
                store.pack_pieces(name)?
            } else {
                let cached = cache.join(format!("{name}.idx"));
                match std::fs::read(&cached)
                    .ok()
                    .and_then(|b| srlm_store::parse_pack_index(name, &b).ok())
                {
                    Some(ids) => ids,
                    None => {
                        let b = self.fetch_idx(name)?;
                        let ids = srlm_store::parse_pack_index(name, &b).map_err(|e| {
                            TransferError::Corrupt {
                                url: self.url().into(),
                                path: format!("packs/{name}.idx"),
                                detail: e.to_string(),
                            }
                        })?;
                        let _ = std::fs::create_dir_all(&cache);
                        let _ = std::fs::write(&cached, &b);
                        ids
                    }
                }
            };
            for id in ids {
                out.entry(id).or_insert_with(|| name.to_string());
            }
        }
        Ok(out)
    }

    pub fn fetch_idx(&self, name: &str) -> Result<Vec<u8>> {
        self.bucket
            .get(&format!("packs/{name}.idx"))?
            .ok_or_else(|| TransferError::Storage {
                url: self.url().into(),
                what: format!("reading packs/{name}.idx"),
                detail: "listed but gone".into(),
            })
    }
}
