//! Diffing committed revisions: tree changes, and for each changed dataset a row-level diff that
//! works from the manifests' row ids. A row id present on both sides is unchanged: its bytes are
//! never read. Row records (for the statistics and key matching) come from the per-manifest
//! cache ([`super::cache`]); a missing cache is built reusing the other side's records for the
//! rows they share, so only rows new to a manifest are ever parsed.
use std::path::PathBuf;

use serde_json::{Map, Value};
use srlm_store::{BlobId, EntryKind, ManifestId, Store, Tree, TreeEntry};

use super::cache;
use super::engine::{self, DiffOptions, RowFetch, RowSink, Side};
use super::record::{
    is_blank, parse_row, FastMap, RecordBuilder, RowId, RowRecord, SideRecords, SideSpec,
};
use super::report::{DatasetReport, EntryChange, EntrySide, ErrorReport, Report};
use super::trend::{self, TrendInput, TrendRow};
use super::DatasetError;

/// Rows read from the store per batch: bounds memory while keeping pack frames warm.
const BATCH: usize = 2048;

fn store_err(file: &str) -> impl FnOnce(srlm_store::StoreError) -> DatasetError + '_ {
    move |e| DatasetError::Store {
        file: file.into(),
        message: e.to_string(),
    }
}

/// The record cache directory of a store.
pub fn cache_dir(store: &Store) -> PathBuf {
    store.cache_dir("diff")
}

/// One committed version of a dataset.
pub struct CommittedDataset {
    /// `REV:path`, for errors and output.
    pub label: String,
    pub manifest: ManifestId,
    pub ids: Vec<RowId>,
}

impl CommittedDataset {
    /// The dataset behind a tree entry.
    pub fn open(
        store: &Store,
        label: String,
        entry: &TreeEntry,
    ) -> Result<CommittedDataset, DatasetError> {
        let rows = store.dataset_rows(&entry.id).map_err(store_err(&label))?;
        let ids = rows.rows.iter().map(|(id, _)| id.0 .0).collect();
        Ok(CommittedDataset {
            label,
            manifest: entry.id,
            ids,
        })
    }

    /// The first non-blank row (it decides the dataset's kind). Kept beside the record cache
    /// (`<manifest>.first`, checked against the row id) so a warm diff reads no row at all.
    pub fn first_row(&self, store: &Store) -> Result<Option<Map<String, Value>>, DatasetError> {
        let kept = cache_dir(store).join(format!("{}.first", self.manifest.to_hex()));
        if let Ok(text) = std::fs::read_to_string(&kept) {
            if let Some((pos, bytes)) = text.split_once('\n') {
                let pos: usize = pos.parse().unwrap_or(usize::MAX);
                let sound = self
                    .ids
                    .get(pos)
                    .is_some_and(|id| srlm_store::ObjectId::of(bytes.as_bytes()).0 == *id);
                if sound {
                    return parse_row(&self.label, pos as u64 + 1, bytes.as_bytes()).map(Some);
                }
            }
        }
        for (start, chunk) in self.ids.chunks(16).enumerate() {
            let ids: Vec<BlobId> = chunk
                .iter()
                .map(|id| BlobId(srlm_store::ObjectId(*id)))
                .collect();
            let rows = store.read_rows(&ids).map_err(store_err(&self.label))?;
            for (k, bytes) in rows.iter().enumerate() {
                if !is_blank(bytes) {
                    let pos = start * 16 + k;
                    let row = parse_row(&self.label, pos as u64 + 1, bytes)?;
                    // derived data: a store that cannot be written (read-only, full) goes without
                    let _ = cache::save_bytes(
                        &cache_dir(store),
                        &kept,
                        &[format!("{pos}\n").as_bytes(), bytes].concat(),
                    );
                    return Ok(Some(row));
                }
            }
        }
        Ok(None)
    }

    /// Records of every row under `spec`: from the cache, else built (reusing `known` records
    /// of rows with the same id, parsing the others) and cached.
    pub fn records(
        &self,
        store: &Store,
        spec: &SideSpec,
        known: Option<(&SideSpec, &SideRecords)>,
    ) -> Result<SideRecords, DatasetError> {
        let dir = cache_dir(store);
        if let Some(c) = cache::load(&dir, &self.manifest.0 .0, spec, &self.ids) {
            return Ok(c);
        }
        let key = spec.key_spec();
        let reuse: FastMap<&RowId, &RowRecord> = match known {
            Some((s, c)) if s == spec => c.records.iter().map(|r| (&r.id, r)).collect(),
            _ => FastMap::default(),
        };
        // Rows the other side does not know are read and parsed, in manifest order.
        let missing: Vec<usize> = (0..self.ids.len())
            .filter(|p| !reuse.contains_key(&self.ids[*p]))
            .collect();
        let mut b = RecordBuilder::default();
        let mut pending: std::collections::VecDeque<(usize, Vec<u8>)> = Default::default();
        let mut chunks = missing.chunks(BATCH);
        for (pos, id) in self.ids.iter().enumerate() {
            let line = pos as u32 + 1;
            if let Some(r) = reuse.get(id) {
                let (_, from) = known.expect("reuse implies known");
                b.push_known(from, r, line);
                continue;
            }
            // Refill the read-ahead with the next batch of missing rows.
            if pending.is_empty() {
                if let Some(chunk) = chunks.next() {
                    let ids: Vec<BlobId> = chunk
                        .iter()
                        .map(|&p| BlobId(srlm_store::ObjectId(self.ids[p])))
                        .collect();
                    let rows = store.read_rows(&ids).map_err(store_err(&self.label))?;
                    pending.extend(chunk.iter().copied().zip(rows));
                }
            }
            let (p, bytes) = pending.pop_front().expect("every missing row was read");
            debug_assert_eq!(p, pos);
            if is_blank(&bytes) {
                continue;
            }
            let row = parse_row(&self.label, line as u64, &bytes)?;
            b.push_row(spec, &key, &self.label, line, *id, &row)?;
        }
        let side = b.finish();
        // Blank rows have no record: cache only when every row has one, so the cache's ids
        // always equal the manifest's.
        if side.records.len() == self.ids.len() {
            // derived data: a store that cannot be written (read-only, full) goes without
            let _ = cache::save(&dir, &self.manifest.0 .0, spec, &side);
        }
        Ok(side)
    }
}

/// Fetches committed rows by id.
pub struct StoreRows<'s> {
    pub store: &'s Store,
    pub label: String,
}

impl RowFetch for StoreRows<'_> {
    fn fetch(&mut self, wanted: &[RowRecord], f: &mut RowSink) -> Result<(), DatasetError> {
        for (c, chunk) in wanted.chunks(BATCH).enumerate() {
            let ids: Vec<BlobId> = chunk
                .iter()
                .map(|r| BlobId(srlm_store::ObjectId(r.id)))
                .collect();
            let rows = self.store.read_rows(&ids).map_err(store_err(&self.label))?;
            for (k, bytes) in rows.iter().enumerate() {
                f(c * BATCH + k, bytes)?;
            }
        }
        Ok(())
    }
}

/// Row-level diff of two committed versions of a dataset (`None`: absent on that side).
pub fn diff_datasets(
    store: &Store,
    a: Option<&CommittedDataset>,
    b: Option<&CommittedDataset>,
    opts: &DiffOptions,
) -> Result<engine::DatasetDiff, DatasetError> {
    let first = |d: Option<&CommittedDataset>| {
        d.map(|d| d.first_row(store))
            .transpose()
            .map(Option::flatten)
    };
    let mut specs = engine::plan_many(&[first(a)?, first(b)?], opts.key.as_ref()).into_iter();
    let (sa, sb) = (
        specs.next().expect("two specs"),
        specs.next().expect("two specs"),
    );
    let empty = SideRecords::default();
    let ca = match a {
        Some(d) => d.records(store, &sa, None)?,
        None => empty.clone(),
    };
    let cb = match b {
        Some(d) => d.records(store, &sb, Some((&sa, &ca)))?,
        None => empty,
    };
    let label = |d: Option<&CommittedDataset>| {
        d.map(|d| d.label.clone())
            .unwrap_or_else(|| "(absent)".into())
    };
    let (la, lb) = (label(a), label(b));
    let mut fa = StoreRows {
        store,
        label: la.clone(),
    };
    let mut fb = StoreRows {
        store,
        label: lb.clone(),
    };
    engine::diff(
        Side {
            label: la,
            spec: sa,
            data: ca,
            rows: &mut fa,
        },
        Side {
            label: lb,
            spec: sb,
            data: cb,
            rows: &mut fb,
        },
        opts,
    )
}

fn entry_side(e: &TreeEntry) -> EntrySide {
    EntrySide {
        id: e.id.to_hex(),
        size: e.size,
        rows: e.rows,
    }
}

fn selected(path: &str, only: &[String]) -> bool {
    only.is_empty()
        || only.iter().any(|p| {
            p.is_empty()
                || path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
}

fn tree_of(store: &Store, rev: &str) -> Result<Tree, DatasetError> {
    let id = store.resolve(rev).map_err(store_err(rev))?;
    store.commit_tree(&id).map_err(store_err(rev))
}

/// Diff two revisions: changed paths (limited to `only`, tree paths), and a row-level diff of
/// each changed dataset. With `keep_going`, a dataset that fails is reported and the others go on.
pub fn diff_revisions(
    store: &Store,
    rev_a: &str,
    rev_b: &str,
    only: &[String],
    opts: &DiffOptions,
    keep_going: bool,
) -> Result<Report, DatasetError> {
    let (ta, tb) = (tree_of(store, rev_a)?, tree_of(store, rev_b)?);
    let mut report = Report::new(rev_a, rev_b);
    // a checkpoint folder (a unit on either side) is one path
    let dirs: std::collections::BTreeSet<String> =
        ta.units.keys().chain(tb.units.keys()).cloned().collect();
    let (va, vb) = (
        super::checkpoint_diff::collapsed(&ta, &dirs),
        super::checkpoint_diff::collapsed(&tb, &dirs),
    );
    let mut paths: Vec<&String> = va
        .keys()
        .chain(vb.keys())
        .filter(|p| selected(p, only))
        .collect();
    paths.sort();
    paths.dedup();
    for path in paths {
        let (ea, eb) = (va.get(path), vb.get(path));
        let status = match (ea, eb) {
            (Some(x), Some(y)) if x.id == y.id => {
                report.unchanged_paths += 1;
                continue;
            }
            (Some(_), Some(_)) => "modified",
            (None, _) => "added",
            (_, None) => "removed",
        };
        let kinds: Vec<EntryKind> = ea.iter().chain(eb.iter()).map(|e| e.kind).collect();
        let dataset = kinds.iter().all(|k| *k == EntryKind::Dataset);
        let kind = kinds.last().expect("one side exists").as_str();
        report.changes.push(EntryChange {
            path: path.clone(),
            status,
            kind: kind.into(),
            a: ea.map(entry_side),
            b: eb.map(entry_side),
        });
        if kind == EntryKind::Checkpoint.as_str() && eb.is_some() {
            let a = ea.map(|_| &ta);
            match super::checkpoint_diff::diff_checkpoint(store, path, a, &tb) {
                Ok(c) => report.checkpoints.push(c),
                Err(e) if keep_going => report.errors.push(ErrorReport::new(path, &e)),
                Err(e) => return Err(e),
            }
        }
        if !dataset {
            continue;
        }
        let result = (|| {
            let open = |rev: &str, e: Option<&TreeEntry>| {
                e.map(|e| CommittedDataset::open(store, format!("{rev}:{path}"), e))
                    .transpose()
            };
            let (da, db) = (open(rev_a, ea)?, open(rev_b, eb)?);
            diff_datasets(store, da.as_ref(), db.as_ref(), opts)
        })();
        match result {
            Ok(diff) => report.datasets.push(DatasetReport {
                path: path.clone(),
                diff,
            }),
            Err(e) if keep_going => report.errors.push(ErrorReport::new(path, &e)),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// The trend of the dataset at `path` across `revs`.
pub fn trend_revisions(
    store: &Store,
    revs: &[String],
    path: &str,
    key: Option<&super::KeySpec>,
) -> Result<Vec<TrendRow>, DatasetError> {
    let mut sets = Vec::new();
    for rev in revs {
        let (_, _, entry) = store
            .resolve_path(&format!("{rev}:{path}"))
            .map_err(store_err(rev))?;
        if entry.kind != EntryKind::Dataset {
            return Err(DatasetError::Usage(format!(
                "{rev}:{path} is a {}, not a dataset",
                entry.kind.as_str()
            )));
        }
        sets.push(CommittedDataset::open(
            store,
            format!("{rev}:{path}"),
            &entry,
        )?);
    }
    let firsts = sets
        .iter()
        .map(|d| d.first_row(store))
        .collect::<Result<Vec<_>, _>>()?;
    let specs = engine::plan_many(&firsts, key);
    let mut inputs: Vec<TrendInput> = Vec::new();
    let mut prev: Option<(SideSpec, SideRecords)> = None;
    for ((rev, d), spec) in revs.iter().zip(&sets).zip(specs) {
        let side = d.records(store, &spec, prev.as_ref().map(|(s, c)| (s, c)))?;
        inputs.push(TrendInput {
            rev: rev.clone(),
            spec: spec.clone(),
            records: side.records.clone(),
        });
        prev = Some((spec, side));
    }
    Ok(trend::trend(&inputs))
}

/// Build the record cache of every dataset of `tree` that differs from `parent` (call after a
/// commit, so the next `srlm diff` against the parent starts warm). Records of rows the parent
/// version shares are reused, so only the new rows are parsed. Returns the datasets built.
pub fn warm_cache(
    store: &Store,
    tree: &Tree,
    parent: Option<&Tree>,
) -> Result<usize, DatasetError> {
    let mut built = 0;
    for (path, entry) in &tree.entries {
        let old = parent
            .and_then(|p| p.entries.get(path))
            .filter(|e| e.kind == EntryKind::Dataset);
        if entry.kind != EntryKind::Dataset || old.is_some_and(|o| o.id == entry.id) {
            continue;
        }
        let new = CommittedDataset::open(store, path.clone(), entry)?;
        let old = old
            .map(|e| CommittedDataset::open(store, format!("(parent):{path}"), e))
            .transpose()?;
        let firsts = [
            old.as_ref()
                .map(|d| d.first_row(store))
                .transpose()?
                .flatten(),
            new.first_row(store)?,
        ];
        let specs = engine::plan_many(&firsts, None);
        let known = match &old {
            Some(d) => Some(d.records(store, &specs[0], None)?),
            None => None,
        };
        new.records(store, &specs[1], known.as_ref().map(|k| (&specs[0], k)))?;
        built += 1;
    }
    Ok(built)
}
