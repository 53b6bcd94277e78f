//! Structured objects and their canonical bytes: trees, commits, manifests, run records. Each
//! starts with a tag line (`srlm-tree/1\n`, …) so an id of one kind can never be read as another.
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::{BlobId, CommitId, ManifestId, ObjectId, RunId, TreeId};

pub(crate) const TREE_TAG: &[u8] = b"srlm-tree/1\n";
pub(crate) const COMMIT_TAG: &[u8] = b"srlm-commit/1\n";
pub(crate) const CHUNKS_TAG: &[u8] = b"srlm-chunks/1\n";
pub(crate) const ROWS_TAG: &[u8] = b"srlm-rows/1\n";
pub(crate) const RUN_TAG: &[u8] = b"srlm-run/1\n";
pub(crate) const FOLDER_TAG: &[u8] = b"srlm-folder/1\n";

/// What a tracked file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A JSONL file, stored row by row.
    Dataset,
    /// A model checkpoint (safetensors, GGUF, …), stored in content-defined chunks.
    Checkpoint,
    /// Any other file, stored in content-defined chunks.
    File,
}

impl EntryKind {
    /// The kind a path gets from its extension.
    pub fn for_path(path: &str) -> EntryKind {
        let ext = path
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "jsonl" => EntryKind::Dataset,
            "safetensors" | "gguf" | "bin" | "pt" | "pth" | "ckpt" | "onnx" => {
                EntryKind::Checkpoint
            }
            _ => EntryKind::File,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            EntryKind::Dataset => "dataset",
            EntryKind::Checkpoint => "checkpoint",
            EntryKind::File => "file",
        }
    }
}

/// One file of a tree: its kind, content id (manifest), size in bytes and, for datasets, rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    pub kind: EntryKind,
    pub id: ManifestId,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// A tree: normalised relative paths (sorted) to entries, and the folders among them that are
/// units (see [`crate::UnitRule`]): one entry each, whose id is a [`FolderManifest`] over the
/// files under it (which `entries` still lists, each chunked and deduplicated as any file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub entries: std::collections::BTreeMap<String, TreeEntry>,
    /// Folder path → unit entry. Trees written before units existed have none (and their bytes,
    /// so their ids, are unchanged: the field is written only when there is a unit).
    pub units: std::collections::BTreeMap<String, TreeEntry>,
}

#[derive(Serialize, Deserialize)]
struct TreeRow {
    path: String,
    #[serde(flatten)]
    entry: TreeEntry,
}

impl Tree {
    /// Canonical bytes: tag line, then compact JSON `{"entries":[{path,kind,id,size,rows?}]}`.
    pub fn encode(&self) -> Vec<u8> {
        let rows: Vec<TreeRow> = self
            .entries
            .iter()
            .map(|(p, e)| TreeRow {
                path: p.clone(),
                entry: e.clone(),
            })
            .collect();
        let mut out = TREE_TAG.to_vec();
        let body = if self.units.is_empty() {
            serde_json::json!({ "entries": rows })
        } else {
            serde_json::json!({ "entries": rows, "units": rows_of(&self.units) })
        };
        serde_json::to_writer(&mut out, &body).expect("tree serialises");
        out
    }

    pub fn decode(id: &ObjectId, raw: &[u8]) -> Result<Tree> {
        let body = strip_tag(raw, TREE_TAG, "tree", id)?;
        #[derive(Deserialize)]
        struct Body {
            entries: Vec<TreeRow>,
            #[serde(default)]
            units: Vec<TreeRow>,
        }
        let b: Body = serde_json::from_slice(body).map_err(|e| malformed("tree", id, e))?;
        Ok(Tree {
            entries: checked_rows(b.entries, "tree", id)?,
            units: checked_rows(b.units, "tree", id)?,
        })
    }
}

fn rows_of(m: &std::collections::BTreeMap<String, TreeEntry>) -> Vec<TreeRow> {
    m.iter()
        .map(|(p, e)| TreeRow {
            path: p.clone(),
            entry: e.clone(),
        })
        .collect()
}

fn checked_rows(
    rows: Vec<TreeRow>,
    what: &'static str,
    id: &ObjectId,
) -> Result<std::collections::BTreeMap<String, TreeEntry>> {
    let mut out = std::collections::BTreeMap::new();
    for r in rows {
        crate::paths::check_tree_path(&r.path).map_err(|e| malformed(what, id, e.to_string()))?;
        out.insert(r.path, r.entry);
    }
    Ok(out)
}

/// A folder stored as one unit: its files (paths relative to the folder) and their entries.
/// Tag line, then compact JSON `{"files":[{path,kind,id,size,rows?}]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FolderManifest {
    pub files: std::collections::BTreeMap<String, TreeEntry>,
}

impl FolderManifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = FOLDER_TAG.to_vec();
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({ "files": rows_of(&self.files) }),
        )
        .expect("folder manifest serialises");
        out
    }

    pub fn decode(id: &ObjectId, raw: &[u8]) -> Result<FolderManifest> {
        let body = strip_tag(raw, FOLDER_TAG, "folder manifest", id)?;
        #[derive(Deserialize)]
        struct Body {
            files: Vec<TreeRow>,
        }
        let b: Body =
            serde_json::from_slice(body).map_err(|e| malformed("folder manifest", id, e))?;
        Ok(FolderManifest {
            files: checked_rows(b.files, "folder manifest", id)?,
        })
    }

    /// The sum of its files' sizes.
    pub fn size(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }
}

/// A commit: tree, parents, author, time (RFC 3339, UTC), message and an optional run record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub tree: TreeId,
    pub parents: Vec<CommitId>,
    pub author: String,
    pub time: String,
    pub message: String,
    pub run: Option<RunId>,
}

impl Commit {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = COMMIT_TAG.to_vec();
        serde_json::to_writer(&mut out, self).expect("commit serialises");
        out
    }

    pub fn decode(id: &ObjectId, raw: &[u8]) -> Result<Commit> {
        let body = strip_tag(raw, COMMIT_TAG, "commit", id)?;
        serde_json::from_slice(body).map_err(|e| malformed("commit", id, e))
    }
}

/// The chunks of a binary file, in order, with their lengths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkManifest {
    pub size: u64,
    pub chunks: Vec<(BlobId, u32)>,
}

/// The rows of a JSONL file, in order, with their lengths (without the `\n`), and whether the
/// file ends with a newline: enough to rebuild it byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowManifest {
    pub size: u64,
    pub final_newline: bool,
    pub rows: Vec<(BlobId, u32)>,
}

/// A file's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Manifest {
    Chunks(ChunkManifest),
    Rows(RowManifest),
}

fn encode_list(out: &mut Vec<u8>, items: &[(BlobId, u32)]) {
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for (id, len) in items {
        out.extend_from_slice(&id.0 .0);
        out.extend_from_slice(&len.to_le_bytes());
    }
}

fn decode_list(b: &[u8], id: &ObjectId) -> Result<Vec<(BlobId, u32)>> {
    let bad = || malformed("manifest", id, "truncated list");
    let n = u64::from_le_bytes(b.get(..8).ok_or_else(bad)?.try_into().unwrap()) as usize;
    if b.len() != 8 + n * 36 {
        return Err(bad());
    }
    Ok(b[8..]
        .chunks_exact(36)
        .map(|c| {
            (
                BlobId(ObjectId(c[..32].try_into().unwrap())),
                u32::from_le_bytes(c[32..].try_into().unwrap()),
            )
        })
        .collect())
}

impl Manifest {
    /// Canonical bytes: tag line, `u64 size`, (rows: `u8 final_newline`), `u64 n`, then n ×
    /// (32-byte id, `u32` length), little-endian.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Manifest::Chunks(m) => {
                let mut out = CHUNKS_TAG.to_vec();
                out.extend_from_slice(&m.size.to_le_bytes());
                encode_list(&mut out, &m.chunks);
                out
            }
            Manifest::Rows(m) => {
                let mut out = ROWS_TAG.to_vec();
                out.extend_from_slice(&m.size.to_le_bytes());
                out.push(m.final_newline as u8);
                encode_list(&mut out, &m.rows);
                out
            }
        }
    }

    pub fn decode(id: &ObjectId, raw: &[u8]) -> Result<Manifest> {
        let bad = || malformed("manifest", id, "truncated header");
        let m = if let Some(b) = raw.strip_prefix(CHUNKS_TAG) {
            let size = u64::from_le_bytes(b.get(..8).ok_or_else(bad)?.try_into().unwrap());
            Manifest::Chunks(ChunkManifest {
                size,
                chunks: decode_list(&b[8..], id)?,
            })
        } else if let Some(b) = raw.strip_prefix(ROWS_TAG) {
            let size = u64::from_le_bytes(b.get(..8).ok_or_else(bad)?.try_into().unwrap());
            let final_newline = *b.get(8).ok_or_else(bad)? != 0;
            Manifest::Rows(RowManifest {
                size,
                final_newline,
                rows: decode_list(&b[9..], id)?,
            })
        } else {
            return Err(malformed("manifest", id, "not a manifest"));
        };
        // A manifest's size is derivable from its pieces: check it, so a tree can trust it.
        let (size, sum) = match &m {
            Manifest::Chunks(c) => (c.size, c.chunks.iter().map(|(_, l)| *l as u64).sum::<u64>()),
            Manifest::Rows(r) => (
                r.size,
                r.rows.iter().map(|(_, l)| *l as u64 + 1).sum::<u64>()
                    - (!r.final_newline && !r.rows.is_empty()) as u64,
            ),
        };
        if size != sum {
            return Err(malformed(
                "manifest",
                id,
                format!("size {size} != sum of pieces {sum}"),
            ));
        }
        Ok(m)
    }

    pub fn size(&self) -> u64 {
        match self {
            Manifest::Chunks(m) => m.size,
            Manifest::Rows(m) => m.size,
        }
    }

    /// The pieces (chunks or rows), in order.
    pub fn pieces(&self) -> &[(BlobId, u32)] {
        match self {
            Manifest::Chunks(m) => &m.chunks,
            Manifest::Rows(m) => &m.rows,
        }
    }
}

/// A stored run record: the record's own bytes (opaque canonical JSON) plus the object ids it
/// consumed and produced (kept beside it so the lineage index can be rebuilt from objects).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunObject {
    pub record: Vec<u8>,
    pub inputs: Vec<ObjectId>,
    pub outputs: Vec<ObjectId>,
}

impl RunObject {
    /// Tag line, a line of input ids, a line of output ids (hex, space-separated), the record.
    pub fn encode(&self) -> Vec<u8> {
        let line = |ids: &[ObjectId]| ids.iter().map(|i| i.to_hex()).collect::<Vec<_>>().join(" ");
        let mut out = RUN_TAG.to_vec();
        out.extend_from_slice(line(&self.inputs).as_bytes());
        out.push(b'\n');
        out.extend_from_slice(line(&self.outputs).as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.record);
        out
    }

    pub fn decode(id: &ObjectId, raw: &[u8]) -> Result<RunObject> {
        let body = strip_tag(raw, RUN_TAG, "run record", id)?;
        let mut parts = body.splitn(3, |b| *b == b'\n');
        let mut ids = |what: &str| -> Result<Vec<ObjectId>> {
            let line = parts
                .next()
                .ok_or_else(|| malformed("run record", id, what))?;
            std::str::from_utf8(line)
                .map_err(|e| malformed("run record", id, e))?
                .split_whitespace()
                .map(|h| {
                    h.parse()
                        .map_err(|e: StoreError| malformed("run record", id, e))
                })
                .collect()
        };
        let inputs = ids("missing inputs line")?;
        let outputs = ids("missing outputs line")?;
        let record = parts.next().unwrap_or_default().to_vec();
        Ok(RunObject {
            record,
            inputs,
            outputs,
        })
    }
}

fn strip_tag<'a>(raw: &'a [u8], tag: &[u8], what: &'static str, id: &ObjectId) -> Result<&'a [u8]> {
    raw.strip_prefix(tag)
        .ok_or_else(|| malformed(what, id, format!("not a {what}")))
}

fn malformed(what: &'static str, id: &ObjectId, e: impl std::fmt::Display) -> StoreError {
    StoreError::Malformed {
        what,
        id: *id,
        detail: e.to_string(),
    }
}

/// The kind of a raw object, from its tag line.
pub(crate) fn tag_of(raw: &[u8]) -> Option<&'static str> {
    [
        (TREE_TAG, "tree"),
        (COMMIT_TAG, "commit"),
        (CHUNKS_TAG, "manifest"),
        (ROWS_TAG, "manifest"),
        (RUN_TAG, "run"),
        (FOLDER_TAG, "folder"),
    ]
    .into_iter()
    .find(|(t, _)| raw.starts_with(t))
    .map(|(_, k)| k)
}

/// Canonical JSON: object keys sorted, no insignificant whitespace. Callers hash this so equal
/// records always get equal ids whatever order their fields were built in.
pub fn canonical_json(v: &serde_json::Value) -> Vec<u8> {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sort(v)).expect("JSON value serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip() {
        let id = ObjectId::of(b"x");
        let mut t = Tree::default();
        t.entries.insert(
            "data/a.jsonl".into(),
            TreeEntry {
                kind: EntryKind::Dataset,
                id: ManifestId(id),
                size: 3,
                rows: Some(1),
            },
        );
        let raw = t.encode();
        assert_eq!(Tree::decode(&ObjectId::of(&raw), &raw).unwrap(), t);
        let c = Commit {
            tree: TreeId(id),
            parents: vec![CommitId(id)],
            author: "a".into(),
            time: "2026-01-01T00:00:00Z".into(),
            message: "m".into(),
            run: None,
        };
        let raw = c.encode();
        assert_eq!(Commit::decode(&id, &raw).unwrap(), c);
        assert!(Tree::decode(&id, &raw).is_err());
        let m = Manifest::Rows(RowManifest {
            size: 4,
            final_newline: true,
            rows: vec![(BlobId(id), 1), (BlobId(id), 1)],
        });
        assert_eq!(Manifest::decode(&id, &m.encode()).unwrap(), m);
        let bad = Manifest::Rows(RowManifest {
            size: 5,
            final_newline: true,
            rows: vec![],
        });
        assert!(Manifest::decode(&id, &bad.encode()).is_err());
        let r = RunObject {
            record: b"{\"a\":1}".to_vec(),
            inputs: vec![id],
            outputs: vec![],
        };
        assert_eq!(RunObject::decode(&id, &r.encode()).unwrap(), r);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a: serde_json::Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":[3]}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            br#"{"a":{"c":[3],"d":2},"b":1}"#.to_vec()
        );
    }

    #[test]
    fn kinds_from_extension() {
        assert_eq!(EntryKind::for_path("a/b.JSONL"), EntryKind::Dataset);
        assert_eq!(EntryKind::for_path("m.safetensors"), EntryKind::Checkpoint);
        assert_eq!(EntryKind::for_path("notes.txt"), EntryKind::File);
    }
}
