//! Pins: objects an application keeps alive in `.srlm/pins/NAME` (e.g. a run whose outputs are
//! staged but not committed). gc keeps what they name; fsck checks it is present.
use std::path::PathBuf;

use crate::error::{IoContext, Result, StoreError};
use crate::{ObjectId, Store};

impl Store {
    /// Keep `id` (and all it reaches) alive under an application's `name` (`.srlm/pins/NAME`),
    /// e.g. a run whose outputs are staged but not committed yet; `None` removes the pin. gc
    /// keeps what pins name, fsck checks it is present.
    pub fn set_pin(&self, name: &str, id: Option<&ObjectId>) -> Result<()> {
        self.writable("setting a pin")?;
        let p = self.pin_path(name)?;
        match id {
            Some(id) => {
                std::fs::create_dir_all(self.dir.join("pins")).at(self.dir.join("pins"))?;
                crate::fsutil::write_atomic(&self.tmp_dir(), &p, format!("{id}\n").as_bytes())
            }
            None => match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StoreError::Io { path: p, err: e })
                }
                _ => Ok(()),
            },
        }
    }

    /// The object pinned under `name`.
    pub fn pin(&self, name: &str) -> Result<Option<ObjectId>> {
        let p = self.pin_path(name)?;
        match std::fs::read_to_string(&p) {
            Ok(s) => s.trim().parse().map(Some).map_err(|_| StoreError::BadPath {
                path: p.display().to_string(),
                reason: "a pin must hold one object id".into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path: p, err: e }),
        }
    }

    /// Every pin, by name.
    pub fn pins(&self) -> Result<Vec<(String, ObjectId)>> {
        let dir = self.dir.join("pins");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if let Some(id) = self.pin(&name)? {
                    out.push((name, id));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn pin_path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(StoreError::BadRefName {
                kind: "pin",
                name: name.into(),
                reason: "letters, digits, '-', '_' and '.' only, not starting with '.'",
            });
        }
        Ok(self.dir.join("pins").join(name))
    }
}
