//! Turning a file into pieces and a manifest, streaming with bounded memory: binary files are cut
//! into content-defined chunks (FastCDC, 256 KiB / 1 MiB / 4 MiB), so two checkpoints that share
//! tensors share chunks; JSONL files are split into rows (each line's exact bytes, without `\n`).
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use fastcdc::v2020::FastCDC;

use crate::error::{IoContext, Result, StoreError};
use crate::objects::{ChunkManifest, RowManifest};
use crate::pack::{PackWriter, Packs};
use crate::{BlobId, ObjectId};

pub(crate) const CHUNK_MIN: u32 = 256 * 1024;
pub(crate) const CHUNK_AVG: u32 = 1024 * 1024;
pub(crate) const CHUNK_MAX: u32 = 4 * 1024 * 1024;
const BUF: usize = 16 * 1024 * 1024;
/// Chunks of a file compressed on trial before deciding whether compression pays for it.
const TRIAL_CHUNKS: usize = 4;

/// Where pieces go: into a pack, or nowhere (hashing only, for `status`).
pub(crate) trait Sink {
    fn chunk(&mut self, id: ObjectId, data: &[u8]) -> Result<()>;
    fn row(&mut self, id: ObjectId, data: &[u8]) -> Result<()>;
    /// Called before each new file.
    fn start_file(&mut self) {}
}

/// Hash only.
pub(crate) struct NullSink;

impl Sink for NullSink {
    fn chunk(&mut self, _: ObjectId, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn row(&mut self, _: ObjectId, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

/// Store new pieces into a pack writer, skipping those any pack already holds.
pub(crate) struct PackSink<'a> {
    pub writer: &'a mut PackWriter,
    pub packs: &'a mut Packs,
    trial: (usize, u64, u64),
    compress: bool,
}

impl<'a> PackSink<'a> {
    pub fn new(writer: &'a mut PackWriter, packs: &'a mut Packs) -> Self {
        PackSink {
            writer,
            packs,
            trial: (0, 0, 0),
            compress: true,
        }
    }

    fn known(&mut self, id: &ObjectId) -> Result<bool> {
        Ok(self.writer.contains(id) || self.packs.contains(id)?)
    }
}

impl Sink for PackSink<'_> {
    fn start_file(&mut self) {
        self.trial = (0, 0, 0);
        self.compress = true;
    }

    fn chunk(&mut self, id: ObjectId, data: &[u8]) -> Result<()> {
        if self.known(&id)? {
            return Ok(());
        }
        let stored = self.writer.put_chunk(id, data, self.compress)?;
        // "zstd where it pays": compress the first chunks of a file; if they shrink by less
        // than 10% (typical of float weights), store the rest raw and save the CPU time.
        if self.trial.0 < TRIAL_CHUNKS {
            self.trial = (
                self.trial.0 + 1,
                self.trial.1 + data.len() as u64,
                self.trial.2 + stored,
            );
            if self.trial.0 == TRIAL_CHUNKS {
                self.compress = self.trial.2 * 10 < self.trial.1 * 9;
            }
        }
        Ok(())
    }

    fn row(&mut self, id: ObjectId, data: &[u8]) -> Result<()> {
        if self.known(&id)? {
            return Ok(());
        }
        self.writer.put_row(id, data)
    }
}

/// Cut a binary stream into content-defined chunks.
pub(crate) fn chunk_file(
    path: &Path,
    mut r: impl Read,
    sink: &mut dyn Sink,
) -> Result<ChunkManifest> {
    sink.start_file();
    let mut buf = vec![0u8; BUF];
    let (mut len, mut eof, mut size) = (0usize, false, 0u64);
    let mut chunks = Vec::new();
    loop {
        while !eof && len < buf.len() {
            match r.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        path: path.into(),
                        err: e,
                    })
                }
            }
        }
        if len == 0 {
            break;
        }
        let cdc = FastCDC::new(&buf[..len], CHUNK_MIN, CHUNK_AVG, CHUNK_MAX);
        let mut start = 0;
        // Cut only where a whole max-size window is buffered (or at the end of the file), so
        // cut points never depend on how reads were split.
        while start < len && (eof || len - start >= CHUNK_MAX as usize) {
            let (_, end) = cdc.cut(start, len - start);
            let data = &buf[start..end];
            let id = ObjectId::of(data);
            sink.chunk(id, data)?;
            chunks.push((BlobId(id), data.len() as u32));
            size += data.len() as u64;
            start = end;
        }
        buf.copy_within(start..len, 0);
        len -= start;
        if eof && len == 0 {
            break;
        }
    }
    Ok(ChunkManifest { size, chunks })
}

/// Split a JSONL stream into rows.
pub(crate) fn split_rows(path: &Path, r: impl Read, sink: &mut dyn Sink) -> Result<RowManifest> {
    sink.start_file();
    let mut r = BufReader::with_capacity(1 << 20, r);
    let mut line = Vec::new();
    let (mut size, mut final_newline, mut lineno) = (0u64, false, 0u64);
    let mut rows = Vec::new();
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).at(path)?;
        if n == 0 {
            break;
        }
        lineno += 1;
        size += n as u64;
        final_newline = line.last() == Some(&b'\n');
        let row = if final_newline {
            &line[..n - 1]
        } else {
            &line[..]
        };
        let len = u32::try_from(row.len()).map_err(|_| StoreError::RowTooLarge {
            path: path.into(),
            line: lineno,
            len: row.len(),
        })?;
        let id = ObjectId::of(row);
        sink.row(id, row)?;
        rows.push((BlobId(id), len));
    }
    Ok(RowManifest {
        size,
        final_newline,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebuild_rows(m: &RowManifest, rows: &[Vec<u8>]) -> Vec<u8> {
        let mut out = rows.join(&b'\n');
        if m.final_newline {
            out.push(b'\n');
        }
        out
    }

    struct Collect(Vec<Vec<u8>>);
    impl Sink for Collect {
        fn chunk(&mut self, id: ObjectId, d: &[u8]) -> Result<()> {
            assert_eq!(id, ObjectId::of(d));
            self.0.push(d.to_vec());
            Ok(())
        }
        fn row(&mut self, id: ObjectId, d: &[u8]) -> Result<()> {
            self.chunk(id, d)
        }
    }

    proptest::proptest! {
        #[test]
        fn rows_rebuild_byte_exact(data in proptest::collection::vec(
            proptest::sample::select(vec![b'a', b'{', b'\n', b'\r', b' ', 0u8]), 0..300)) {
            let mut c = Collect(Vec::new());
            let m = split_rows(Path::new("t"), &data[..], &mut c).unwrap();
            proptest::prop_assert_eq!(rebuild_rows(&m, &c.0), data.clone());
            proptest::prop_assert_eq!(m.size, data.len() as u64);
        }
    }

    #[test]
    fn chunks_rebuild_and_shift_resistant() {
        use rand::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut a = vec![0u8; 20 << 20];
        rng.fill_bytes(&mut a);
        let mut c = Collect(Vec::new());
        let ma = chunk_file(Path::new("a"), &a[..], &mut c).unwrap();
        assert_eq!(c.0.concat(), a);
        assert!(ma.chunks.len() > 5);
        // insert 10 bytes near the start: all but the first chunk or two are shared
        let mut b = a[..1000].to_vec();
        b.extend_from_slice(b"0123456789");
        b.extend_from_slice(&a[1000..]);
        let mb = chunk_file(Path::new("b"), &b[..], &mut NullSink).unwrap();
        let sa: std::collections::HashSet<_> = ma.chunks.iter().collect();
        let shared = mb.chunks.iter().filter(|c| sa.contains(c)).count();
        assert!(
            shared + 2 >= mb.chunks.len(),
            "{shared} of {}",
            mb.chunks.len()
        );
        let empty = chunk_file(Path::new("e"), &b""[..], &mut NullSink).unwrap();
        assert_eq!((empty.size, empty.chunks.len()), (0, 0));
    }
}
