//! Packs: many small pieces (dataset rows, checkpoint chunks) in one file, so a million rows never
//! become a million files. A pack is written once per `add`, then never changed (gc rewrites a
//! pack that is partly unreachable into a new one).
//!
//! `packs/<name>.pack` holds frames back to back after an 8-byte magic. A frame is one chunk, or
//! a run of rows up to [`ROW_FRAME`] bytes; it is zstd-compressed when that saves 10% or more.
//! Since pack format 2 (`SRLMPK02`) each frame starts with a header listing its pieces' lengths
//! (4 bytes each; a piece's id is the hash of its bytes), so a lost or corrupt `.idx` is rebuilt
//! from the pack itself
//! ([`rebuild_index`]); format-1 packs (`SRLMPK01`, no headers) are still read.
//! `packs/<name>.idx` lists the entries sorted by id (fixed 64-byte records, binary searched) and
//! ends with the BLAKE3 of everything before it; `<name>` is that digest. The `.pack` is renamed
//! into place before its `.idx`, so an index never names a missing pack; a `.pack` without an
//! `.idx` is the leftover of an interrupted add, ignored by readers and removed by gc.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::{persist, write_atomic};
use crate::ObjectId;

const PACK_MAGIC_V1: &[u8; 8] = b"SRLMPK01";
const PACK_MAGIC: &[u8; 8] = b"SRLMPK02";
const FRAME_MAGIC: &[u8; 4] = b"FRAM";
/// Frame header: magic, stored length, raw length, zstd flag (+3 pad), piece count.
const FRAME_HEAD: usize = 4 + 4 + 4 + 4 + 4;
/// Per piece in a frame header: its length (pieces lie back to back in the raw frame).
const FRAME_PIECE: usize = 4;
const IDX_MAGIC: &[u8; 8] = b"SRLMIX01";
const ENTRY: usize = 64;
/// Rows are grouped into frames of about this many bytes before compression.
pub(crate) const ROW_FRAME: usize = 64 * 1024;
/// Start writing dirty pages back early every this many bytes, so the final fsync is short.
const SYNC_EVERY: u64 = 64 * 1024 * 1024;

/// Where one piece lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PackEntry {
    pub id: ObjectId,
    pub frame_off: u64,
    pub frame_len: u32,
    pub frame_raw_len: u32,
    pub off: u32,
    pub len: u32,
    pub zstd: bool,
}

impl PackEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.frame_off.to_le_bytes());
        out.extend_from_slice(&self.frame_len.to_le_bytes());
        out.extend_from_slice(&self.frame_raw_len.to_le_bytes());
        out.extend_from_slice(&self.off.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.push(self.zstd as u8);
        out.extend_from_slice(&[0u8; 7]);
    }

    fn decode(b: &[u8]) -> PackEntry {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        PackEntry {
            id: ObjectId(b[..32].try_into().unwrap()),
            frame_off: u64::from_le_bytes(b[32..40].try_into().unwrap()),
            frame_len: u32_at(40),
            frame_raw_len: u32_at(44),
            off: u32_at(48),
            len: u32_at(52),
            zstd: b[56] != 0,
        }
    }
}

/// A loaded `.idx` file.
pub(crate) struct PackIndex {
    pub name: String,
    data: Vec<u8>,
    count: usize,
}

impl PackIndex {
    pub fn load(path: &Path) -> Result<PackIndex> {
        let data = std::fs::read(path).at(path)?;
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        PackIndex::from_bytes(name, data, &path.display().to_string())
    }

    /// An index from its bytes (`shown` names it in errors), checksum and size checked.
    pub fn from_bytes(name: String, data: Vec<u8>, shown: &str) -> Result<PackIndex> {
        let bad = |detail: &str| StoreError::BadPath {
            path: shown.to_string(),
            reason: format!("corrupt pack index: {detail}"),
        };
        if data.len() < 16 + 32 || &data[..8] != IDX_MAGIC {
            return Err(bad("bad header"));
        }
        let body = data.len() - 32;
        if blake3::hash(&data[..body]).as_bytes() != &data[body..] {
            return Err(bad("checksum mismatch"));
        }
        let count = u64::from_le_bytes(data[8..16].try_into().unwrap()) as usize;
        if 16 + count * ENTRY != body {
            return Err(bad("entry count does not match its size"));
        }
        Ok(PackIndex { name, data, count })
    }

    fn entry(&self, i: usize) -> PackEntry {
        PackEntry::decode(&self.data[16 + i * ENTRY..16 + (i + 1) * ENTRY])
    }

    pub fn find(&self, id: &ObjectId) -> Option<PackEntry> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at = 16 + mid * ENTRY;
            // compare the leading 8 bytes as an integer first: ids are uniformly distributed,
            // so this nearly always decides without a full 32-byte compare
            let head = u64::from_be_bytes(self.data[at..at + 8].try_into().unwrap());
            let want = u64::from_be_bytes(id.0[..8].try_into().unwrap());
            let ord = head
                .cmp(&want)
                .then_with(|| self.data[at..at + 32].cmp(&id.0[..]));
            match ord {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.entry(mid)),
            }
        }
        None
    }

    pub fn entries(&self) -> impl Iterator<Item = PackEntry> + '_ {
        (0..self.count).map(|i| self.entry(i))
    }

    pub fn len(&self) -> usize {
        self.count
    }
}

/// The packs of a store: indexes loaded lazily, open files and the last decompressed frame
/// cached (reading a dataset's rows in order decompresses each frame once).
pub(crate) struct Packs {
    dir: PathBuf,
    indexes: Option<Vec<PackIndex>>,
    files: HashMap<String, File>,
    frame: Option<(String, u64, Arc<Vec<u8>>)>,
    /// Packs whose `.idx` did not load (name, why): their pieces read as missing, the rest of
    /// the store works; fsck reports them and repair rebuilds them.
    pub bad: Vec<(String, String)>,
}

impl Packs {
    pub fn new(dir: PathBuf) -> Packs {
        Packs {
            dir,
            indexes: None,
            files: HashMap::new(),
            frame: None,
            bad: Vec::new(),
        }
    }

    /// Forget loaded indexes (after a pack was added or removed).
    pub fn reload(&mut self) {
        self.indexes = None;
        self.files.clear();
        self.frame = None;
    }

    /// The names of complete packs (those with an `.idx`).
    pub fn names(dir: &Path) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir.into(),
                    err: e,
                })
            }
        };
        for f in rd {
            let f = f.at(dir)?;
            let n = f.file_name().to_string_lossy().into_owned();
            if let Some(stem) = n.strip_suffix(".idx") {
                out.push(stem.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn indexes(&mut self) -> Result<&[PackIndex]> {
        if self.indexes.is_none() {
            let mut v = Vec::new();
            self.bad.clear();
            for n in Packs::names(&self.dir)? {
                match PackIndex::load(&self.dir.join(format!("{n}.idx"))) {
                    Ok(ix) => v.push(ix),
                    Err(e) => self.bad.push((n, e.to_string())),
                }
            }
            self.indexes = Some(v);
        }
        Ok(self.indexes.as_deref().unwrap())
    }

    pub fn lookup(&mut self, id: &ObjectId) -> Result<Option<(String, PackEntry)>> {
        for ix in self.indexes()? {
            if let Some(e) = ix.find(id) {
                return Ok(Some((ix.name.clone(), e)));
            }
        }
        Ok(None)
    }

    pub fn contains(&mut self, id: &ObjectId) -> Result<bool> {
        Ok(self.lookup(id)?.is_some())
    }

    /// Read and verify one piece; `Ok(None)` when no pack holds it.
    pub fn read(&mut self, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        match self.lookup(id)? {
            Some((pack, e)) => self.read_entry(&pack, &e).map(Some),
            None => Ok(None),
        }
    }

    /// The bytes of a frame, decompressed (cached: the last frame read).
    pub fn frame(&mut self, pack: &str, e: &PackEntry) -> Result<Arc<Vec<u8>>> {
        if let Some((p, off, data)) = &self.frame {
            if p == pack && *off == e.frame_off {
                return Ok(data.clone());
            }
        }
        let path = self.dir.join(format!("{pack}.pack"));
        if !self.files.contains_key(pack) {
            let f = File::open(&path).at(&path)?;
            self.files.insert(pack.to_string(), f);
        }
        let f = &self.files[pack];
        let mut stored = vec![0u8; e.frame_len as usize];
        f.read_exact_at(&mut stored, e.frame_off)
            .map_err(|err| StoreError::Corrupt {
                id: e.id,
                detail: format!(
                    "{}: cannot read frame at {}: {err}",
                    path.display(),
                    e.frame_off
                ),
            })?;
        let raw = if e.zstd {
            zstd::bulk::decompress(&stored, e.frame_raw_len as usize).map_err(|err| {
                StoreError::Corrupt {
                    id: e.id,
                    detail: format!("{}: frame at {}: zstd: {err}", path.display(), e.frame_off),
                }
            })?
        } else {
            stored
        };
        let raw = Arc::new(raw);
        self.frame = Some((pack.to_string(), e.frame_off, raw.clone()));
        Ok(raw)
    }

    pub fn read_entry(&mut self, pack: &str, e: &PackEntry) -> Result<Vec<u8>> {
        let frame = self.frame(pack, e)?;
        let (a, b) = (e.off as usize, e.off as usize + e.len as usize);
        let bytes = frame.get(a..b).ok_or_else(|| StoreError::Corrupt {
            id: e.id,
            detail: format!("pack {pack}: entry outside its frame"),
        })?;
        let got = ObjectId::of(bytes);
        if got != e.id {
            return Err(StoreError::Corrupt {
                id: e.id,
                detail: format!("pack {pack}: content hashes to {got}"),
            });
        }
        Ok(bytes.to_vec())
    }
}

/// Writes one new pack. Pieces already in the pack are skipped; the caller skips pieces
/// already in other packs. Dropping an unfinished writer deletes its temp file.
pub(crate) struct PackWriter {
    tmp: tempfile::NamedTempFile,
    file: File,
    pos: u64,
    entries: Vec<PackEntry>,
    ids: HashSet<ObjectId>,
    frame: Vec<u8>,
    frame_ids: Vec<(ObjectId, u32, u32)>,
    zstd: zstd::bulk::Compressor<'static>,
    since_sync: u64,
    syncer: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
    pub bytes_written: u64,
}

impl PackWriter {
    pub fn new(tmp_dir: &Path) -> Result<PackWriter> {
        let mut tmp = tempfile::Builder::new()
            .suffix(".pack")
            .tempfile_in(tmp_dir)
            .at(tmp_dir)?;
        tmp.write_all(PACK_MAGIC).at(tmp.path().to_path_buf())?;
        let file = tmp.as_file().try_clone().at(tmp.path().to_path_buf())?;
        // level 1: most of level 3's ratio on JSONL at about twice the speed
        let zstd = zstd::bulk::Compressor::new(1).at(tmp_dir)?;
        Ok(PackWriter {
            tmp,
            file,
            pos: PACK_MAGIC.len() as u64,
            entries: Vec::new(),
            ids: HashSet::new(),
            frame: Vec::new(),
            frame_ids: Vec::new(),
            zstd,
            since_sync: 0,
            syncer: None,
            bytes_written: 0,
        })
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.ids.contains(id)
    }

    /// Write a frame (its header, then the stored bytes); returns the stored bytes' offset.
    fn write_frame(
        &mut self,
        stored: &[u8],
        raw_len: u32,
        zstd: bool,
        pieces: &[(ObjectId, u32, u32)],
    ) -> Result<u64> {
        let mut head = Vec::with_capacity(FRAME_HEAD + pieces.len() * FRAME_PIECE);
        head.extend_from_slice(FRAME_MAGIC);
        head.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        head.extend_from_slice(&raw_len.to_le_bytes());
        head.extend_from_slice(&[zstd as u8, 0, 0, 0]);
        head.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
        let mut next = 0u32;
        for (_, off, len) in pieces {
            debug_assert_eq!(*off, next, "pieces lie back to back");
            next = off + len;
            head.extend_from_slice(&len.to_le_bytes());
        }
        let tmp_path = self.tmp.path().to_path_buf();
        self.file.write_all(&head).at(&tmp_path)?;
        let off = self.pos + head.len() as u64;
        self.file.write_all(stored).at(&tmp_path)?;
        let n = (head.len() + stored.len()) as u64;
        self.pos += n;
        self.bytes_written += n;
        self.since_sync += n;
        if self.since_sync >= SYNC_EVERY {
            self.since_sync = 0;
            self.kick_writeback()?;
        }
        Ok(off)
    }

    /// Ask a helper thread to fdatasync the pack so far: the disk works while we keep hashing,
    /// and the fsync at the end only waits for the tail.
    fn kick_writeback(&mut self) -> Result<()> {
        if self.syncer.is_none() {
            let f = self.file.try_clone().at(self.tmp.path().to_path_buf())?;
            let (tx, rx) = mpsc::channel::<()>();
            let h = std::thread::spawn(move || {
                while rx.recv().is_ok() {
                    while rx.try_recv().is_ok() {}
                    let _ = f.sync_data();
                }
            });
            self.syncer = Some((tx, h));
        }
        let _ = self.syncer.as_ref().unwrap().0.send(());
        Ok(())
    }

    /// Store one chunk as its own frame; `compress` says whether to try zstd. Returns the
    /// stored size.
    pub fn put_chunk(&mut self, id: ObjectId, data: &[u8], compress: bool) -> Result<u64> {
        if !self.ids.insert(id) {
            return Ok(0);
        }
        let len = data.len() as u32;
        let z = if compress {
            self.zstd.compress(data).ok()
        } else {
            None
        };
        let (stored, zstd) = match &z {
            Some(z) if z.len() * 10 < data.len() * 9 => (&z[..], true),
            _ => (data, false),
        };
        let stored_len = stored.len() as u64;
        let frame_off = self.write_frame(stored, len, zstd, &[(id, 0, len)])?;
        self.entries.push(PackEntry {
            id,
            frame_off,
            frame_len: stored_len as u32,
            frame_raw_len: len,
            off: 0,
            len,
            zstd,
        });
        Ok(stored_len)
    }

    /// Queue one row; rows are written in frames of about [`ROW_FRAME`] bytes.
    pub fn put_row(&mut self, id: ObjectId, data: &[u8]) -> Result<()> {
        if !self.ids.insert(id) {
            return Ok(());
        }
        self.frame_ids
            .push((id, self.frame.len() as u32, data.len() as u32));
        self.frame.extend_from_slice(data);
        if self.frame.len() >= ROW_FRAME {
            self.flush_rows()?;
        }
        Ok(())
    }

    fn flush_rows(&mut self) -> Result<()> {
        if self.frame_ids.is_empty() {
            return Ok(());
        }
        let raw = std::mem::take(&mut self.frame);
        let z = self.zstd.compress(&raw).ok();
        let (stored, zstd) = match &z {
            Some(z) if z.len() * 10 < raw.len() * 9 => (&z[..], true),
            _ => (&raw[..], false),
        };
        let frame_len = stored.len() as u32;
        let ids = std::mem::take(&mut self.frame_ids);
        let frame_off = self.write_frame(stored, raw.len() as u32, zstd, &ids)?;
        for (id, off, len) in ids {
            self.entries.push(PackEntry {
                id,
                frame_off,
                frame_len,
                frame_raw_len: raw.len() as u32,
                off,
                len,
                zstd,
            });
        }
        Ok(())
    }

    /// Make the pack durable and visible; returns its name, or `None` when nothing was written.
    /// The index is [`encode_index`] of the entries, so [`rebuild_index`] gives it back.
    pub fn finish(mut self, packs_dir: &Path, tmp_dir: &Path) -> Result<Option<String>> {
        self.flush_rows()?;
        if let Some((tx, h)) = self.syncer.take() {
            drop(tx);
            let _ = h.join();
        }
        if self.entries.is_empty() {
            return Ok(None);
        }
        self.file.sync_all().at(self.tmp.path().to_path_buf())?;
        let (idx, name) = encode_index(std::mem::take(&mut self.entries));
        std::fs::create_dir_all(packs_dir).at(packs_dir)?;
        persist(self.tmp, &packs_dir.join(format!("{name}.pack")))?;
        write_atomic(tmp_dir, &packs_dir.join(format!("{name}.idx")), &idx)?;
        Ok(Some(name))
    }
}

/// An index's bytes and the pack name they give (the digest of the entries, sorted by id).
pub(crate) fn encode_index(mut entries: Vec<PackEntry>) -> (Vec<u8>, String) {
    entries.sort_by_key(|a| a.id);
    let mut idx = Vec::with_capacity(16 + entries.len() * ENTRY + 32);
    idx.extend_from_slice(IDX_MAGIC);
    idx.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in &entries {
        e.encode(&mut idx);
    }
    let sum = blake3::hash(&idx);
    idx.extend_from_slice(sum.as_bytes());
    (idx, sum.to_hex().to_string())
}

/// Rebuild a pack's index from its frame headers (pack format 2): every piece is re-hashed for
/// its id, so a damaged piece gets an id nobody asks for and is never returned as another.
pub(crate) fn rebuild_index(pack: &Path) -> Result<(Vec<u8>, String)> {
    let data = std::fs::read(pack).at(pack)?;
    let bad = |detail: String| StoreError::BadPath {
        path: pack.display().to_string(),
        reason: detail,
    };
    if data.get(..8) == Some(&PACK_MAGIC_V1[..]) {
        return Err(bad(
            "pack format 1 has no frame headers: its index cannot be rebuilt (add the files it held again)".into(),
        ));
    }
    if data.get(..8) != Some(&PACK_MAGIC[..]) {
        return Err(bad("not an srlm pack (bad magic)".into()));
    }
    let u32_at = |i: usize| -> Result<u32> {
        data.get(i..i + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .ok_or_else(|| bad(format!("frame header cut short at byte {i}")))
    };
    let mut pos = 8usize;
    let mut entries = Vec::new();
    while pos < data.len() {
        if data.get(pos..pos + 4) != Some(&FRAME_MAGIC[..]) {
            return Err(bad(format!("no frame header at byte {pos}")));
        }
        let (stored_len, raw_len) = (u32_at(pos + 4)?, u32_at(pos + 8)?);
        let zstd = data.get(pos + 12).copied().unwrap_or(0) != 0;
        let count = u32_at(pos + 16)? as usize;
        let head_len = FRAME_HEAD + count * FRAME_PIECE;
        let frame_off = pos + head_len;
        let end = frame_off + stored_len as usize;
        let stored = data
            .get(frame_off..end)
            .ok_or_else(|| bad(format!("frame at byte {pos} runs past the end")))?;
        let raw = if zstd {
            zstd::bulk::decompress(stored, raw_len as usize)
                .map_err(|e| bad(format!("frame at byte {pos}: zstd: {e}")))?
        } else {
            stored.to_vec()
        };
        let mut off = 0u32;
        for k in 0..count {
            let len = u32_at(pos + FRAME_HEAD + k * FRAME_PIECE)?;
            let piece = raw
                .get(off as usize..off as usize + len as usize)
                .ok_or_else(|| {
                    bad(format!(
                        "a piece of the frame at byte {pos} lies outside it"
                    ))
                })?;
            let id = ObjectId::of(piece);
            entries.push(PackEntry {
                id,
                frame_off: frame_off as u64,
                frame_len: stored_len,
                frame_raw_len: raw_len,
                off,
                len,
                zstd,
            });
            off += len;
        }
        pos = end;
    }
    Ok(encode_index(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (packs, tmp) = (dir.path().join("packs"), dir.path().join("tmp"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut w = PackWriter::new(&tmp).unwrap();
        let rows: Vec<Vec<u8>> = (0..5000)
            .map(|i| format!("{{\"prompt\": \"row {i}\"}}").into_bytes())
            .collect();
        for r in &rows {
            w.put_row(ObjectId::of(r), r).unwrap();
        }
        let chunk = vec![7u8; 100_000];
        w.put_chunk(ObjectId::of(&chunk), &chunk, true).unwrap();
        let name = w.finish(&packs, &tmp).unwrap().unwrap();
        let mut p = Packs::new(packs.clone());
        for r in rows.iter().step_by(97) {
            assert_eq!(p.read(&ObjectId::of(r)).unwrap().unwrap(), *r);
        }
        assert_eq!(p.read(&ObjectId::of(&chunk)).unwrap().unwrap(), chunk);
        assert!(p.read(&ObjectId::of(b"absent")).unwrap().is_none());
        // the pack is far smaller than the rows: frames were compressed
        let size = std::fs::metadata(packs.join(format!("{name}.pack")))
            .unwrap()
            .len();
        assert!(size < 60_000, "{size}");
        // the index comes back from the pack's frame headers, byte for byte
        let idx = std::fs::read(packs.join(format!("{name}.idx"))).unwrap();
        let (rebuilt, rname) = rebuild_index(&packs.join(format!("{name}.pack"))).unwrap();
        assert_eq!((rebuilt, rname), (idx, name.clone()));
        // flip a byte in the middle of a row frame's data: some read fails, none returns wrong
        // bytes
        let pp = packs.join(format!("{name}.pack"));
        let mut bytes = std::fs::read(&pp).unwrap();
        let (_, e) = Packs::new(packs.clone())
            .lookup(&ObjectId::of(&rows[2500]))
            .unwrap()
            .unwrap();
        let mid = (e.frame_off + e.frame_len as u64 / 2) as usize;
        bytes[mid] ^= 0x40;
        std::fs::write(&pp, bytes).unwrap();
        let mut p = Packs::new(packs);
        let mut failures = 0;
        for r in &rows {
            match p.read(&ObjectId::of(r)) {
                Ok(Some(b)) => assert_eq!(b, *r),
                Ok(None) => panic!("row lost"),
                Err(_) => failures += 1,
            }
        }
        assert!(p.read(&ObjectId::of(&chunk)).is_err() || failures > 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn random_packs_and_indexes_never_panic(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            magic in 0usize..3,
        ) {
            let d = tempfile::tempdir().unwrap();
            let mut bytes = [&PACK_MAGIC[..], &PACK_MAGIC_V1[..], &IDX_MAGIC[..]][magic].to_vec();
            if magic == 0 && raw.len() > 8 {
                bytes.extend_from_slice(FRAME_MAGIC); // get past the first check
            }
            bytes.extend(raw);
            let p = d.path().join("x.pack");
            std::fs::write(&p, &bytes).unwrap();
            let _ = rebuild_index(&p);
            let _ = PackIndex::load(&p);
        }
    }
}
