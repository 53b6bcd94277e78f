//! [`Bucket`]: the synchronous face of one remote's `object_store` client. The tokio runtime
//! lives here and nowhere else; calls block until done. Large files go up as multipart uploads
//! and many files in parallel (bounded); downloads stream into files.
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::config::RemoteConfig;
use crate::error::{Result, TransferError};
use crate::location::CONNECT_TIMEOUT;

/// Files up to this size go up in one PUT; larger ones in parts of this size.
const PART: usize = 16 * 1024 * 1024;
/// Requests in flight at once.
pub const PARALLEL: usize = 4;

/// One listed key.
#[derive(Clone, Debug)]
pub struct Listed {
    /// The key relative to the listed folder.
    pub name: String,
    pub size: u64,
    /// When the store last wrote it (its clock), in nanoseconds since the epoch.
    pub modified_ns: i64,
}

/// A remote's object store, blocking.
pub struct Bucket {
    pub url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    pub fn open(cfg: &RemoteConfig) -> Result<Bucket> {
        let (store, prefix) = crate::location::open(cfg)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TransferError::Storage {
                url: cfg.url.clone(),
                what: "starting the I/O runtime".into(),
                detail: e.to_string(),
            })?;
        Ok(Bucket {
            url: cfg.url.clone(),
            store,
            prefix,
            rt,
        })
    }

    fn key(&self, rel: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    fn err(&self, what: String, e: object_store::Error) -> TransferError {
        err_of(&self.url, what, e)
    }

    /// A key's bytes, `None` when absent.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(rel);
        let r = self.rt.block_on(async {
            match self.store.get(&key).await {
                Ok(g) => g.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        r.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.err(format!("reading {rel}"), e))
    }

    /// Write a key (small).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let key = self.key(rel);
        self.rt
            .block_on(self.store.put(&key, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.err(format!("writing {rel}"), e))
    }

    /// Upload files (`(key, path)`), in parallel, each in parts when large. Returns the bytes
    /// sent. `done` is told each key as it lands.
    pub fn put_files(
        &self,
        files: &[(String, std::path::PathBuf)],
        done: &mut dyn FnMut(&str, u64),
    ) -> Result<u64> {
        let store = self.store.clone();
        let jobs = files.iter().map(|(rel, path)| {
            let key = self.key(rel);
            let store = store.clone();
            async move {
                let n = upload(store, key, path).await;
                (rel.clone(), n)
            }
        });
        self.rt.block_on(async {
            let mut total = 0;
            let mut s = futures::stream::iter(jobs).buffer_unordered(PARALLEL);
            while let Some((rel, r)) = s.next().await {
                let n = r.map_err(|e| match e {
                    Up::Io(e) => TransferError::Storage {
                        url: self.url.clone(),
                        what: format!("reading the local file for {rel}"),
                        detail: e.to_string(),
                    },
                    Up::Store(e) => self.err(format!("uploading {rel}"), e),
                })?;
                total += n;
                done(&rel, n);
            }
            Ok(total)
        })
    }

    /// Download several keys at once (at most [`PARALLEL`] in flight), each into its own
    /// writer; returns each writer with the key's size (`None` when absent), in input order.
    pub fn get_many<W: Write>(&self, items: Vec<(String, W)>) -> Result<Vec<(W, Option<u64>)>> {
        let url = self.url.clone();
        let jobs = items.into_iter().enumerate().map(|(i, (rel, mut out))| {
            let key = self.key(&rel);
            let store = self.store.clone();
            let url = url.clone();
            async move {
                let g = match store.get(&key).await {
                    Ok(g) => g,
                    Err(object_store::Error::NotFound { .. }) => return Ok((i, out, None)),
                    Err(e) => return Err(err_of(&url, format!("reading {rel}"), e)),
                };
                let mut s = g.into_stream();
                let mut n = 0u64;
                while let Some(chunk) = s.next().await {
                    let chunk = chunk.map_err(|e| err_of(&url, format!("reading {rel}"), e))?;
                    out.write_all(&chunk).map_err(|e| TransferError::Storage {
                        url: url.clone(),
                        what: format!("writing {rel} locally"),
                        detail: e.to_string(),
                    })?;
                    n += chunk.len() as u64;
                }
                Ok((i, out, Some(n)))
            }
        });
        let mut got: Vec<(usize, W, Option<u64>)> = self.rt.block_on(
            futures::stream::iter(jobs)
                .buffer_unordered(PARALLEL)
                .try_collect::<Vec<_>>(),
        )?;
        got.sort_by_key(|(i, _, _)| *i);
        Ok(got.into_iter().map(|(_, w, n)| (w, n)).collect())
    }

    /// Download a key into `out`; returns its size, `None` when absent.
    pub fn get_to(&self, rel: &str, out: &mut impl Write) -> Result<Option<u64>> {
        let got = self.get_many(vec![(rel.to_string(), out)])?;
        Ok(got.into_iter().next().and_then(|(_, n)| n))
    }

    /// The keys under folder `dir` (recursively), names relative to it. A missing bucket is
    /// [`TransferError::NoBucket`].
    pub fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let base = self.key(dir);
        let r: std::result::Result<Vec<_>, _> = self
            .rt
            .block_on(self.store.list(Some(&base)).try_collect::<Vec<_>>());
        let metas = r.map_err(|e| {
            let t = self.err(format!("listing {dir}/"), e);
            match t {
                TransferError::Storage { detail, url, .. }
                    if detail.contains("NoSuchBucket") || detail.contains("not found") =>
                {
                    TransferError::NoBucket { url, detail }
                }
                t => t,
            }
        })?;
        let skip = base.parts().count();
        Ok(metas
            .into_iter()
            .map(|m| Listed {
                name: m
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: m.size,
                modified_ns: m.last_modified.timestamp_nanos_opt().unwrap_or(i64::MAX),
            })
            .collect())
    }
}

enum Up {
    Io(std::io::Error),
    Store(object_store::Error),
}

async fn upload(store: Arc<dyn ObjectStore>, key: ObjPath, path: &Path) -> Result<u64, Up> {
    let mut f = std::fs::File::open(path).map_err(Up::Io)?;
    let size = f.metadata().map_err(Up::Io)?.len();
    if size as usize <= PART {
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf).map_err(Up::Io)?;
        store
            .put(&key, PutPayload::from(buf))
            .await
            .map_err(Up::Store)?;
        return Ok(size);
    }
    let up = store.put_multipart(&key).await.map_err(Up::Store)?;
    let mut w = WriteMultipart::new_with_chunk_size(up, PART);
    let mut buf = vec![0u8; PART];
    loop {
        let n = f.read(&mut buf).map_err(Up::Io)?;
        if n == 0 {
            break;
        }
        w.wait_for_capacity(PARALLEL).await.map_err(Up::Store)?;
        w.write(&buf[..n]);
    }
    w.finish().await.map_err(Up::Store)?;
    Ok(size)
}

/// An `object_store` error as ours: unreachable endpoints and timeouts say so.
fn err_of(url: &str, what: String, e: object_store::Error) -> TransferError {
    let detail = error_chain(&e);
    let low = detail.to_ascii_lowercase();
    if low.contains("timed out")
        || low.contains("timeout")
        || low.contains("connection refused")
        || low.contains("error sending request")
        || low.contains("dns error")
    {
        return TransferError::Timeout {
            url: url.into(),
            what,
            secs: CONNECT_TIMEOUT.as_secs(),
            detail,
        };
    }
    if low.contains("nosuchbucket") {
        return TransferError::NoBucket {
            url: url.into(),
            detail,
        };
    }
    TransferError::Storage {
        url: url.into(),
        what,
        detail,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}
