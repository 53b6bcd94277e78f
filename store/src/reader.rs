//! [`EntryReader`]: a tracked file's bytes streamed back piece by piece, each verified.
use std::io::Read;

use crate::error::StoreError;
use crate::objects::Manifest;
use crate::{BlobId, Result, Store};

/// Streams a tracked file's bytes (see [`Store::open_entry`]).
pub struct EntryReader<'a> {
    store: &'a Store,
    pieces: Vec<(BlobId, u32)>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
    rows: bool,
    final_newline: bool,
}

impl<'a> EntryReader<'a> {
    pub(crate) fn new(store: &'a Store, m: Manifest) -> Result<EntryReader<'a>> {
        let (pieces, rows, final_newline) = match m {
            Manifest::Chunks(c) => (c.chunks, false, false),
            Manifest::Rows(r) => (r.rows, true, r.final_newline),
        };
        Ok(EntryReader {
            store,
            pieces,
            next: 0,
            buf: Vec::new(),
            pos: 0,
            rows,
            final_newline,
        })
    }
}

impl Read for EntryReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.next >= self.pieces.len() {
                return Ok(0);
            }
            let (id, len) = self.pieces[self.next];
            self.next += 1;
            let mut data = self
                .store
                .read_blob(&id)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if data.len() != len as usize {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    StoreError::Corrupt {
                        id: id.0,
                        detail: "length differs from manifest".into(),
                    },
                ));
            }
            if self.rows && (self.next < self.pieces.len() || self.final_newline) {
                data.push(b'\n');
            }
            self.buf = data;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
