//! A cache of row records per committed dataset manifest, in `.srlm/cache/diff/`, so that the
//! statistics of a committed dataset never need its rows parsed twice. One file per (manifest,
//! side spec): a header (spec, schema table) and fixed-size records, closed by a BLAKE3 checksum.
//! Any damaged, stale or unreadable file is a cache miss, never an error: the records are
//! rebuilt from the rows. Written atomically (temp file in the same directory, fsync, rename).
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{RowId, RowRecord, Schema, SideRecords, SideSpec};
use super::DatasetError;

const MAGIC: &[u8; 8] = b"SRLMREC1";
const RECORD_BYTES: usize = 32 + 16 + 16 + 4 + 12 + 8 + 1 + 4 + 4;

#[derive(Serialize, Deserialize)]
struct Header {
    spec: SideSpec,
    schemas: Vec<Schema>,
    rows: u64,
    field_hashes: u64,
}

/// The cache file of `manifest` under `spec`.
pub fn cache_path(dir: &Path, manifest: &[u8; 32], spec: &SideSpec) -> PathBuf {
    dir.join(format!("{}-{}.rec", hex::encode(manifest), spec.digest()))
}

fn encode(spec: &SideSpec, side: &SideRecords) -> Vec<u8> {
    let header = serde_json::to_vec(&Header {
        spec: spec.clone(),
        schemas: side.schemas.clone(),
        rows: side.records.len() as u64,
        field_hashes: side.field_hashes.len() as u64,
    })
    .expect("header serialises");
    let mut out = Vec::with_capacity(
        8 + 4 + header.len() + side.records.len() * RECORD_BYTES + side.field_hashes.len() * 8 + 32,
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    for r in &side.records {
        out.extend_from_slice(&r.id);
        out.extend_from_slice(&r.key.to_le_bytes());
        out.extend_from_slice(&r.content.to_le_bytes());
        out.extend_from_slice(&r.line.to_le_bytes());
        for l in r.lens {
            out.extend_from_slice(&l.to_le_bytes());
        }
        for s in r.scores {
            out.extend_from_slice(&s.to_le_bytes());
        }
        out.push(r.flags);
        out.extend_from_slice(&r.schema.to_le_bytes());
        out.extend_from_slice(&r.fields.to_le_bytes());
    }
    for h in &side.field_hashes {
        out.extend_from_slice(&h.to_le_bytes());
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn decode(bytes: &[u8], spec: &SideSpec) -> Option<SideRecords> {
    let (body, sum) = bytes.split_at(bytes.len().checked_sub(32)?);
    if blake3::hash(body).as_bytes() != sum || !body.starts_with(MAGIC) {
        return None;
    }
    let hlen = u32::from_le_bytes(body.get(8..12)?.try_into().ok()?) as usize;
    let header: Header = serde_json::from_slice(body.get(12..12 + hlen)?).ok()?;
    let rest = &body[12 + hlen..];
    let rec_bytes = header.rows as usize * RECORD_BYTES;
    if &header.spec != spec || rest.len() != rec_bytes + header.field_hashes as usize * 8 {
        return None;
    }
    let (recs, hashes) = rest.split_at(rec_bytes);
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let records = recs
        .chunks_exact(RECORD_BYTES)
        .map(|b| RowRecord {
            id: b[..32].try_into().expect("32 bytes"),
            key: u128::from_le_bytes(b[32..48].try_into().expect("16 bytes")),
            content: u128::from_le_bytes(b[48..64].try_into().expect("16 bytes")),
            line: u32_at(b, 64),
            lens: [u32_at(b, 68), u32_at(b, 72), u32_at(b, 76)],
            scores: [f32::from_bits(u32_at(b, 80)), f32::from_bits(u32_at(b, 84))],
            flags: b[88],
            schema: u32_at(b, 89),
            fields: u32_at(b, 93),
        })
        .collect::<Vec<_>>();
    let field_hashes: Vec<u64> = hashes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    // Every index must be in range: a sound checksum over a buggy writer's output is still a miss.
    let sound = records.iter().all(|r| {
        header
            .schemas
            .get(r.schema as usize)
            .is_some_and(|s| r.fields as usize + s.len() <= field_hashes.len())
    });
    sound.then_some(SideRecords {
        records,
        schemas: header.schemas,
        field_hashes,
    })
}

/// The cached records of `manifest` under `spec`, if a sound cache file exists and its row ids
/// are exactly `ids` (in order).
pub fn load(
    dir: &Path,
    manifest: &[u8; 32],
    spec: &SideSpec,
    ids: &[RowId],
) -> Option<SideRecords> {
    let bytes = std::fs::read(cache_path(dir, manifest, spec)).ok()?;
    let side = decode(&bytes, spec)?;
    let same =
        side.records.len() == ids.len() && side.records.iter().zip(ids).all(|(r, id)| &r.id == id);
    same.then_some(side)
}

/// Write the records of `manifest` atomically.
pub fn save(
    dir: &Path,
    manifest: &[u8; 32],
    spec: &SideSpec,
    side: &SideRecords,
) -> Result<(), DatasetError> {
    save_bytes(dir, &cache_path(dir, manifest, spec), &encode(spec, side))
}

/// Write `bytes` to `path` (inside the cache directory `dir`) atomically. Not fsynced: a file
/// torn by a crash fails its checksum (or, for `.first`, its row id) and is rebuilt, and
/// nothing else depends on it.
pub fn save_bytes(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), DatasetError> {
    let io = |source| DatasetError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SideSpec {
        SideSpec {
            kind: "aift".into(),
            key: vec!["prompt".into()],
            length_fields: vec!["prompt".into()],
            score_fields: vec![],
            pairs: true,
        }
    }

    fn side() -> SideRecords {
        let r = |i: u8| RowRecord {
            id: [i; 32],
            key: i as u128 * 7,
            content: i as u128,
            line: i as u32,
            lens: [i as u32, 5, 6],
            scores: [4.5, 1.0],
            flags: 5,
            schema: 0,
            fields: i as u32 - 1,
        };
        SideRecords {
            records: vec![r(1), r(2)],
            schemas: vec![vec![("prompt".into(), "string".into())]],
            field_hashes: vec![11, 12],
        }
    }

    #[test]
    fn round_trip_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let m = [9u8; 32];
        let ids = [[1u8; 32], [2u8; 32]];
        save(dir.path(), &m, &spec(), &side()).unwrap();
        assert_eq!(load(dir.path(), &m, &spec(), &ids), Some(side()));
        // Other ids, other spec: miss.
        assert_eq!(load(dir.path(), &m, &spec(), &ids[..1]), None);
        let mut other = spec();
        other.key = vec!["chosen".into()];
        assert_eq!(load(dir.path(), &m, &other, &ids), None);
        // A flipped byte: miss.
        let p = cache_path(dir.path(), &m, &spec());
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert_eq!(load(dir.path(), &m, &spec(), &ids), None);
    }
}
