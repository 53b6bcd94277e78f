//! The op log (`.srlm/oplog`: one JSON line per init, add, commit, ref change, checkout, gc),
//! the store's disk usage, and repair of pack indexes.
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result, StoreError};
use crate::store::now_rfc3339;
use crate::Store;

impl Store {
    pub(crate) fn log_op(&self, op: &str, detail: serde_json::Value) -> Result<()> {
        let p = self.dir.join("oplog");
        let line = serde_json::json!({"time": now_rfc3339(), "op": op, "pid": std::process::id(), "detail": detail});
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .at(&p)?;
        f.write_all(format!("{line}\n").as_bytes()).at(&p)?;
        f.sync_data().at(&p)
    }

    /// The op log (every init, add, commit, ref change, checkout and gc), oldest first.
    pub fn oplog(&self) -> Result<Vec<serde_json::Value>> {
        let p = self.dir.join("oplog");
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(StoreError::Io { path: p, err: e }),
        };
        // A line cut short by a crash is skipped, not fatal.
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Bytes used by the store directory (objects, packs, index, everything).
    pub fn disk_usage(&self) -> Result<u64> {
        fn du(p: &Path) -> Result<u64> {
            let md = std::fs::symlink_metadata(p).at(p)?;
            if md.is_dir() {
                let mut s = 0;
                for e in std::fs::read_dir(p).at(p)? {
                    s += du(&e.at(p)?.path())?;
                }
                Ok(s)
            } else {
                Ok(md.len())
            }
        }
        du(&self.dir)
    }

    /// Rebuild the `.idx` of every pack whose index is unreadable, from the pack's own frame
    /// headers. Returns the packs repaired and those that could not be (with why).
    pub fn repair_pack_indexes(&mut self) -> Result<RepairReport> {
        self.writable("repairing packs")?;
        let packs_dir = self.dir.join("packs");
        let (mut fixed, mut failed) = (Vec::new(), Vec::new());
        for name in crate::pack::Packs::names(&packs_dir)? {
            let idx = packs_dir.join(format!("{name}.idx"));
            if crate::pack::PackIndex::load(&idx).is_ok() {
                continue;
            }
            match crate::pack::rebuild_index(&packs_dir.join(format!("{name}.pack"))) {
                Ok((bytes, n)) if n == name => {
                    crate::fsutil::write_atomic(&self.tmp_dir(), &idx, &bytes)?;
                    fixed.push(name);
                }
                Ok(_) => failed.push((name, "the pack's contents do not match its name".into())),
                Err(e) => failed.push((name, e.to_string())),
            }
        }
        self.odb.packs().reload();
        if !fixed.is_empty() {
            self.log_op("repair", serde_json::json!({"pack_indexes": fixed}))?;
        }
        Ok(RepairReport { fixed, failed })
    }
}

/// What [`Store::repair_pack_indexes`] did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RepairReport {
    /// Packs whose index was rebuilt.
    pub fixed: Vec<String>,
    /// Packs whose index could not be rebuilt, with why.
    pub failed: Vec<(String, String)>,
}
