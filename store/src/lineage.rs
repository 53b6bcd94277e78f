//! Lineage on the [`Store`]: run records (opaque JSON plus input and output ids) and the
//! reverse index from an object to the runs producing or consuming it (sled when it can be
//! had; a scan of the run objects for a reader without it).
use crate::error::{Result, StoreError};
use crate::objects::{tag_of, RunObject};
use crate::odb::ObjectDb;
use crate::{ObjectId, RunId, Store};

impl Store {
    /// Store a run record (opaque JSON bytes, canonical by the caller's choice: see
    /// [`crate::canonical_json`]) and index it as producing `outputs` and consuming `inputs`.
    pub fn put_run(
        &self,
        record: &[u8],
        inputs: &[ObjectId],
        outputs: &[ObjectId],
    ) -> Result<RunId> {
        serde_json::from_slice::<serde_json::Value>(record)
            .map_err(|e| StoreError::BadRunRecord(e.to_string()))?;
        let obj = RunObject {
            record: record.to_vec(),
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
        };
        let run = RunId(self.put_object(&obj.encode())?);
        let ix = self.index()?;
        for o in outputs {
            ix.link_run(&ix.produced, o, &run)?;
        }
        for i in inputs {
            ix.link_run(&ix.consumed, i, &run)?;
        }
        self.flush()?;
        Ok(run)
    }

    pub fn get_run(&self, id: &RunId) -> Result<RunObject> {
        RunObject::decode(&id.0, &self.get_object(&id.0)?)
    }

    /// Every run record (for a reader without the index).
    fn all_runs(&self) -> Result<&[(RunId, RunObject)]> {
        if let Some(r) = self.runs_scan.get() {
            return Ok(r);
        }
        let mut out = Vec::new();
        for id in self.odb.list_objects()? {
            let Ok(Some(raw)) = self.odb.get_object(&id) else {
                continue;
            };
            if tag_of(&raw) == Some("run") {
                if let Ok(r) = RunObject::decode(&id, &raw) {
                    out.push((RunId(id), r));
                }
            }
        }
        out.sort_by_key(|(id, _)| *id);
        let _ = self.runs_scan.set(out);
        Ok(self.runs_scan.get().expect("just set"))
    }

    /// Runs that list `id` among their outputs.
    pub fn runs_producing(&self, id: &ObjectId) -> Result<Vec<RunId>> {
        match self.index_if_available() {
            Some(ix) => ix.runs_of(&ix.produced, id),
            None => Ok(self
                .all_runs()?
                .iter()
                .filter(|(_, r)| r.outputs.contains(id))
                .map(|(run, _)| *run)
                .collect()),
        }
    }

    /// Runs that list `id` among their inputs.
    pub fn runs_consuming(&self, id: &ObjectId) -> Result<Vec<RunId>> {
        match self.index_if_available() {
            Some(ix) => ix.runs_of(&ix.consumed, id),
            None => Ok(self
                .all_runs()?
                .iter()
                .filter(|(_, r)| r.inputs.contains(id))
                .map(|(run, _)| *run)
                .collect()),
        }
    }
}
