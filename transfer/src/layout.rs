//! The layout of a remote, and what its refs are.
//!
//! ```text
//! FORMAT                     "srlm-remote 1"
//! packs/<name>.pack, .idx    the store's packs, as they are (immutable, named by the BLAKE3 of
//!                            the index); the .idx goes up after the .pack, so a listed .idx
//!                            always has its pack
//! bundles/<h>.bundle         the small objects (commits, trees, manifests, run records) of one
//!                            push, in one zstd-compressed file named by its BLAKE3
//! ops/<h>.json               one record per push: the ref updates (name, old, new), the heads
//!                            it saw, its bundle and the ids in it; named by its BLAKE3
//! ```
//!
//! Everything is written once under a content name and never changed, so no write needs a
//! conditional PUT (which Garage does not honour). The refs are what replaying every op record
//! gives, in the order the store wrote them (its last-modified time, then name), each update
//! applied only when the ref still holds the value the pusher saw: of two concurrent pushes of
//! one branch the first written wins and the other is reported as diverged, its commits kept.
//! A pusher re-reads the ops after writing its own and learns whether it won.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use srlm_store::ObjectId;

use crate::error::{Result, TransferError};

pub const FORMAT_KEY: &str = "FORMAT";
pub const REMOTE_FORMAT: u32 = 1;
const BUNDLE_MAGIC: &[u8; 8] = b"SRLMBD01";
/// A bundle may not decompress to more than this (a hostile or corrupt one cannot fill memory).
const BUNDLE_MAX: usize = 4 << 30;

/// One ref change in an op record (`None`: absent / deleted), ids in hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub old: Option<String>,
    pub new: Option<String>,
}

/// A bundle an op record brought, with the ids it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub name: String,
    pub ids: Vec<String>,
}

/// One push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    pub format: u32,
    /// The op heads the pusher saw.
    pub parents: Vec<String>,
    pub updates: BTreeMap<String, Update>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleRef>,
    /// The pusher's clock (information only; order comes from the store's clock).
    pub time: String,
}

impl OpRecord {
    pub fn encode(&self) -> (Vec<u8>, String) {
        let b = serde_json::to_vec(self).expect("op serialises");
        let name = blake3::hash(&b).to_hex().to_string();
        (b, name)
    }

    pub fn decode(url: &str, name: &str, b: &[u8]) -> Result<OpRecord> {
        let bad = |detail: String| TransferError::Corrupt {
            url: url.into(),
            path: format!("ops/{name}.json"),
            detail,
        };
        if blake3::hash(b).to_hex().as_str() != name {
            return Err(bad("its content does not hash to its name".into()));
        }
        let op: OpRecord = serde_json::from_slice(b).map_err(|e| bad(e.to_string()))?;
        if op.format > REMOTE_FORMAT {
            return Err(TransferError::NewerFormat {
                url: url.into(),
                found: format!("{} (in ops/{name}.json)", op.format),
                supported: REMOTE_FORMAT,
            });
        }
        Ok(op)
    }
}

/// Small objects as one bundle: magic, then zstd of `[id 32][len u32 LE][bytes]…`. Returns the
/// bytes and the name.
pub fn encode_bundle(objects: &[(ObjectId, Vec<u8>)]) -> (Vec<u8>, String) {
    let mut raw = Vec::new();
    for (id, b) in objects {
        raw.extend_from_slice(&id.0);
        raw.extend_from_slice(&(b.len() as u32).to_le_bytes());
        raw.extend_from_slice(b);
    }
    let mut out = BUNDLE_MAGIC.to_vec();
    out.extend(zstd::bulk::compress(&raw, 3).expect("zstd compresses into memory"));
    let name = blake3::hash(&out).to_hex().to_string();
    (out, name)
}

/// A bundle's objects, each verified against its id; the bundle against its name.
pub fn decode_bundle(url: &str, name: &str, b: &[u8]) -> Result<Vec<(ObjectId, Vec<u8>)>> {
    let bad = |detail: String| TransferError::Corrupt {
        url: url.into(),
        path: format!("bundles/{name}.bundle"),
        detail,
    };
    if blake3::hash(b).to_hex().as_str() != name {
        return Err(bad("its content does not hash to its name".into()));
    }
    if b.get(..8) != Some(&BUNDLE_MAGIC[..]) {
        return Err(bad("not a bundle (bad magic)".into()));
    }
    let raw = zstd::stream::decode_all(&b[8..]).map_err(|e| bad(e.to_string()))?;
    if raw.len() > BUNDLE_MAX {
        return Err(bad("too large".into()));
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let head = raw
            .get(pos..pos + 36)
            .ok_or_else(|| bad(format!("cut short at byte {pos}")))?;
        let id = ObjectId(head[..32].try_into().expect("32 bytes"));
        let len = u32::from_le_bytes(head[32..].try_into().expect("4 bytes")) as usize;
        let body = raw
            .get(pos + 36..pos + 36 + len)
            .ok_or_else(|| bad(format!("object {id} cut short")))?;
        if ObjectId::of(body) != id {
            return Err(bad(format!("object {id}: its bytes hash to another id")));
        }
        out.push((id, body.to_vec()));
        pos += 36 + len;
    }
    Ok(out)
}

/// An update that replay did not apply: the ref held something else by then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub op: String,
    pub name: String,
    /// What the ref kept.
    pub kept: Option<String>,
    /// What the op wanted.
    pub wanted: Option<String>,
}

/// The refs of a remote and what they rest on.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub refs: BTreeMap<String, String>,
    /// Ops no other op names as a parent.
    pub heads: Vec<String>,
    /// Rejected updates of ops that are still heads (concurrent pushes nobody has built on).
    pub diverged: Vec<Rejected>,
    /// Every rejected update (by op), for a pusher to learn whether it won.
    pub rejected: Vec<Rejected>,
    /// Where each pushed small object is: id → bundle name.
    pub bundles: HashMap<ObjectId, String>,
    /// How many op records there are.
    pub ops: usize,
    /// When the store wrote each op (its clock, ns since the epoch).
    pub written_ns: HashMap<String, i64>,
}

/// Replay op records (`(name, modified_ns, record)`) into the refs; see the module docs.
pub fn replay(mut ops: Vec<(String, i64, OpRecord)>) -> State {
    ops.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let mut st = State {
        ops: ops.len(),
        written_ns: ops.iter().map(|(n, t, _)| (n.clone(), *t)).collect(),
        ..Default::default()
    };
    let mut parents: HashSet<&str> = HashSet::new();
    for (_, _, op) in &ops {
        parents.extend(op.parents.iter().map(String::as_str));
    }
    for (name, _, op) in &ops {
        for (r, u) in &op.updates {
            let cur = st.refs.get(r).cloned();
            if cur == u.old || cur == u.new {
                match &u.new {
                    Some(v) => st.refs.insert(r.clone(), v.clone()),
                    None => st.refs.remove(r),
                };
            } else {
                st.rejected.push(Rejected {
                    op: name.clone(),
                    name: r.clone(),
                    kept: cur,
                    wanted: u.new.clone(),
                });
            }
        }
        if let Some(b) = &op.bundle {
            for id in &b.ids {
                if let Ok(id) = id.parse() {
                    st.bundles.insert(id, b.name.clone());
                }
            }
        }
    }
    st.heads = ops
        .iter()
        .filter(|(n, _, _)| !parents.contains(n.as_str()))
        .map(|(n, _, _)| n.clone())
        .collect();
    st.heads.sort();
    let heads: HashSet<&String> = st.heads.iter().collect();
    st.diverged = st
        .rejected
        .iter()
        .filter(|r| heads.contains(&r.op))
        .cloned()
        .collect();
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(parents: &[&str], r: &str, old: Option<&str>, new: Option<&str>) -> OpRecord {
        OpRecord {
            format: 1,
            parents: parents.iter().map(|s| s.to_string()).collect(),
            updates: [(
                r.to_string(),
                Update {
                    old: old.map(Into::into),
                    new: new.map(Into::into),
                },
            )]
            .into(),
            bundle: None,
            time: "t".into(),
        }
    }

    #[test]
    fn first_written_of_two_concurrent_pushes_wins() {
        let base = op(&[], "refs/heads/main", None, Some("a"));
        let x = op(&["o1"], "refs/heads/main", Some("a"), Some("x"));
        let y = op(&["o1"], "refs/heads/main", Some("a"), Some("y"));
        let tag = op(&["o1"], "refs/tags/M1", None, Some("a"));
        let st = replay(vec![
            ("o3".into(), 30, y),
            ("o1".into(), 10, base),
            ("o2".into(), 20, x),
            ("o4".into(), 40, tag),
        ]);
        assert_eq!(st.refs["refs/heads/main"], "x");
        assert_eq!(
            st.refs["refs/tags/M1"], "a",
            "other refs of concurrent ops apply"
        );
        assert_eq!(st.heads, vec!["o2", "o3", "o4"]);
        assert_eq!(st.diverged.len(), 1);
        assert_eq!(st.diverged[0].op, "o3");
        // building on both heads settles it
        let z = op(&["o2", "o3", "o4"], "refs/heads/main", Some("x"), Some("z"));
        let mut all = vec![("o5".to_string(), 50, z)];
        all.push(("o1".into(), 10, op(&[], "refs/heads/main", None, Some("a"))));
        let st = replay(all);
        assert_eq!(st.refs["refs/heads/main"], "a", "z's old value is not a");
    }

    #[test]
    fn bundles_round_trip_and_catch_corruption() {
        let objs = vec![
            (ObjectId::of(b"one"), b"one".to_vec()),
            (ObjectId::of(b"two"), b"two".to_vec()),
        ];
        let (b, name) = encode_bundle(&objs);
        assert_eq!(decode_bundle("u", &name, &b).unwrap(), objs);
        let mut bad = b.clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(decode_bundle("u", &name, &bad).is_err());
        let lying = encode_bundle(&[(ObjectId::of(b"x"), b"y".to_vec())]);
        let e = decode_bundle("u", &lying.1, &lying.0).unwrap_err();
        assert!(e.to_string().contains("hash"), "{e}");
        let (ob, oname) = op(&[], "refs/heads/main", None, Some("a")).encode();
        assert!(OpRecord::decode("u", &oname, &ob).is_ok());
        assert!(OpRecord::decode("u", "00", &ob).is_err());
    }
}
