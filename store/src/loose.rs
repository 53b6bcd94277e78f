//! Loose objects: one file per small object (commits, trees, manifests, run records, opaque
//! JSON), at `objects/ab/cdef…`, stored raw or zstd-compressed when that saves at least 10%.
//! The id is the BLAKE3 of the uncompressed bytes; reads verify it.
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::write_atomic;
use crate::ObjectId;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Where a loose object lives under `objects_dir`.
pub(crate) fn path_of(objects_dir: &Path, id: &ObjectId) -> PathBuf {
    let h = id.to_hex();
    objects_dir.join(&h[..2]).join(&h[2..])
}

/// Encode raw bytes for storage (1-byte header, then raw or zstd bytes).
pub(crate) fn encode(raw: &[u8]) -> Vec<u8> {
    if raw.len() >= 256 {
        if let Ok(z) = zstd::bulk::compress(raw, 3) {
            if z.len() * 10 < raw.len() * 9 {
                let mut out = Vec::with_capacity(z.len() + 1);
                out.push(ZSTD);
                out.extend_from_slice(&z);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(raw.len() + 1);
    out.push(RAW);
    out.extend_from_slice(raw);
    out
}

/// Decode stored bytes and check they hash to `id`.
pub(crate) fn decode(id: &ObjectId, stored: &[u8]) -> Result<Vec<u8>> {
    let corrupt = |detail: String| StoreError::Corrupt { id: *id, detail };
    let raw = match stored.first() {
        Some(&RAW) => stored[1..].to_vec(),
        Some(&ZSTD) => {
            let mut d = zstd::stream::Decoder::new(&stored[1..])
                .map_err(|e| corrupt(format!("zstd: {e}")))?;
            let mut out = Vec::new();
            std::io::copy(&mut d, &mut out).map_err(|e| corrupt(format!("zstd: {e}")))?;
            out
        }
        Some(b) => return Err(corrupt(format!("unknown encoding byte {b}"))),
        None => return Err(corrupt("empty file".into())),
    };
    let got = ObjectId::of(&raw);
    if got != *id {
        return Err(corrupt(format!("content hashes to {got}")));
    }
    Ok(raw)
}

/// Store `raw` unless already present; returns its id.
pub(crate) fn put(objects_dir: &Path, tmp_dir: &Path, raw: &[u8]) -> Result<ObjectId> {
    let id = ObjectId::of(raw);
    let dest = path_of(objects_dir, &id);
    if dest.exists() {
        return Ok(id); // content-addressed: already present is success
    }
    let parent = dest.parent().expect("object path has a parent");
    std::fs::create_dir_all(parent).at(parent)?;
    write_atomic(tmp_dir, &dest, &encode(raw))?;
    Ok(id)
}

/// Read and verify a loose object; `Ok(None)` when absent.
pub(crate) fn get(objects_dir: &Path, id: &ObjectId) -> Result<Option<Vec<u8>>> {
    let p = path_of(objects_dir, id);
    match std::fs::read(&p) {
        Ok(stored) => decode(id, &stored).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io { path: p, err: e }),
    }
}

/// Every loose object id present (unordered), skipping stray files.
pub(crate) fn list(objects_dir: &Path) -> Result<Vec<ObjectId>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(objects_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(StoreError::Io {
                path: objects_dir.into(),
                err: e,
            })
        }
    };
    for d in rd {
        let d = d.at(objects_dir)?;
        let prefix = d.file_name().to_string_lossy().into_owned();
        if prefix.len() != 2 || !d.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(d.path()).at(d.path())? {
            let f = f.at(d.path())?;
            let name = format!("{prefix}{}", f.file_name().to_string_lossy());
            if let Ok(id) = name.parse::<ObjectId>() {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// Loose object ids starting with a lower-case hex prefix (2+ characters).
pub(crate) fn with_prefix(objects_dir: &Path, prefix: &str) -> Result<Vec<ObjectId>> {
    let dir = objects_dir.join(&prefix[..2]);
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::Io { path: dir, err: e }),
    };
    for f in rd {
        let name = format!(
            "{}{}",
            &prefix[..2],
            f.at(&dir)?.file_name().to_string_lossy()
        );
        if name.starts_with(prefix) {
            if let Ok(id) = name.parse() {
                out.push(id);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let objs = dir.path().join("objects");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let big = b"{\"a\": 1}\n".repeat(100);
        for raw in [&b"small"[..], &big[..]] {
            let id = put(&objs, &tmp, raw).unwrap();
            assert_eq!(put(&objs, &tmp, raw).unwrap(), id);
            assert_eq!(get(&objs, &id).unwrap().unwrap(), raw);
        }
        let id = ObjectId::of(&big);
        assert_eq!(std::fs::read(path_of(&objs, &id)).unwrap()[0], ZSTD);
        let id = ObjectId::of(b"small");
        let p = path_of(&objs, &id);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[2] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(matches!(get(&objs, &id), Err(StoreError::Corrupt { .. })));
        assert_eq!(list(&objs).unwrap().len(), 2);
    }
}
