//! Lineage: walk run records upstream (what an object was made from, back to the roots) or
//! downstream (what was made from it); [`render`] draws the walk as a text tree, JSON,
//! Graphviz dot or Mermaid.
//!
//! Upstream links are exact where the record says where an input came from: an input resolved
//! from a commit (`M1:model`) was made by the run of the newest commit in that commit's history
//! that lists it among its outputs ([`RunIndex::produced_at`]). Only working-tree inputs, and
//! records written before sources were recorded, are matched by content id through the store's
//! reverse index, and then only to a run that started before the consumer finished (the newest
//! such run): identical bytes made later can never be an input's origin.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

use srlm_store::{CommitId, ObjectId, RunId, Store};

use crate::provenance::{InputSource, ObjectRef, ProvenanceError, RunRecord, RunStatus};

pub mod render;

/// Errors while walking lineage.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    #[error(transparent)]
    Provenance(#[from] ProvenanceError),
    #[error(transparent)]
    Store(#[from] srlm_store::StoreError),
}

/// What the walk needs from a store: the reverse index, the records, history and tags.
pub trait RunIndex {
    fn producing(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError>;
    fn consuming(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError>;
    fn record(&self, id: RunId) -> Result<RunRecord, LineageError>;
    /// The newest commit in the history of `commit` (itself included) whose run lists `id`
    /// among its outputs, and that run.
    fn produced_at(
        &self,
        commit: CommitId,
        id: ObjectId,
    ) -> Result<Option<(CommitId, RunId)>, LineageError>;
    /// Every tag and the commit it names.
    fn tags(&self) -> Result<Vec<(String, CommitId)>, LineageError>;
}

impl RunIndex for Store {
    fn producing(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError> {
        Ok(self.runs_producing(&id)?)
    }
    fn consuming(&self, id: ObjectId) -> Result<Vec<RunId>, LineageError> {
        Ok(self.runs_consuming(&id)?)
    }
    fn record(&self, id: RunId) -> Result<RunRecord, LineageError> {
        Ok(RunRecord::load(self, id)?)
    }
    fn produced_at(
        &self,
        commit: CommitId,
        id: ObjectId,
    ) -> Result<Option<(CommitId, RunId)>, LineageError> {
        for (c, commit) in self.log(&commit)? {
            let Some(run) = commit.run else { continue };
            // the run object lists its outputs beside the record: no JSON to parse
            if self.get_run(&run)?.outputs.contains(&id) {
                return Ok(Some((c, run)));
            }
        }
        Ok(None)
    }
    fn tags(&self) -> Result<Vec<(String, CommitId)>, LineageError> {
        Ok(Store::tags(self)?)
    }
}

/// Upstream (towards the roots) or downstream (towards what was derived).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// A run met on the walk.
#[derive(Debug, Clone)]
pub struct RunNode {
    pub id: RunId,
    pub record: RunRecord,
    /// Distance from the start (1 = produced / consumed a start object).
    pub depth: usize,
    /// The commit that holds the run, when the walk learnt it (links by source).
    pub commit: Option<CommitId>,
}

/// How an object was linked to the runs that made (up) or used (down) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// By the recorded source: the run of a commit in the input's commit's history.
    Source,
    /// By content id (a working-tree input, or a record older than recorded sources).
    Content,
}

impl Matched {
    pub fn as_str(&self) -> &'static str {
        match self {
            Matched::Source => "source",
            Matched::Content => "content",
        }
    }
}

/// The runs linked to one object.
#[derive(Debug, Clone)]
pub struct Link {
    pub runs: Vec<RunId>,
    pub matched: Matched,
}

/// The result of a walk: the runs in breadth-first order from the start, and the objects where
/// the walk ended (upstream: objects no run produced; downstream: objects no run consumed).
#[derive(Debug, Clone)]
pub struct Lineage {
    pub direction: Direction,
    /// The objects the walk started from (a path's entry, or a commit run's outputs).
    pub start: Vec<ObjectRef>,
    pub runs: Vec<RunNode>,
    pub ends: Vec<ObjectRef>,
    /// The depth limit the walk ran with.
    pub max_depth: Option<usize>,
    /// Per object: the runs that produced (up) or consumed (down) it, in walk order.
    pub(crate) edges: BTreeMap<ObjectId, Link>,
    /// Objects whose runs lie beyond the depth limit.
    pub(crate) cut: BTreeSet<ObjectId>,
    /// Per object: the commit it was made at (up) or read from, for its tags.
    pub(crate) at: BTreeMap<ObjectId, CommitId>,
    /// Commit → its tags.
    pub(crate) tags: BTreeMap<CommitId, Vec<String>>,
}

/// A queued object and the run it was an input (up) or output (down) of.
struct Queued {
    obj: ObjectRef,
    depth: usize,
    /// (started, finished) of the run that led here.
    via: Option<(String, String)>,
}

/// Walk from `start` in `dir`, at most `max_depth` runs away. A run reached twice is listed
/// once. Failed runs are skipped: they produced nothing that was committed.
pub fn walk(
    index: &impl RunIndex,
    start: Vec<ObjectRef>,
    dir: Direction,
    max_depth: Option<usize>,
) -> Result<Lineage, LineageError> {
    let mut l = Lineage {
        direction: dir,
        start: start.clone(),
        runs: Vec::new(),
        ends: Vec::new(),
        max_depth,
        edges: BTreeMap::new(),
        cut: BTreeSet::new(),
        at: BTreeMap::new(),
        tags: BTreeMap::new(),
    };
    for (name, c) in index.tags()? {
        l.tags.entry(c).or_default().push(name);
    }
    let mut seen_runs: BTreeMap<RunId, usize> = BTreeMap::new();
    let mut seen_objs: BTreeSet<ObjectId> = BTreeSet::new();
    let mut queue: VecDeque<Queued> = start
        .into_iter()
        .map(|obj| Queued {
            obj,
            depth: 0,
            via: None,
        })
        .collect();
    while let Some(q) = queue.pop_front() {
        let obj = q.obj;
        if !seen_objs.insert(obj.id) {
            continue;
        }
        let (found, matched) = match dir {
            Direction::Up => producers(index, &obj, q.via.as_ref(), &mut l)?,
            Direction::Down => consumers(index, &obj, q.via.as_ref())?,
        };
        if found.is_empty() {
            l.ends.push(obj);
            continue;
        }
        if max_depth.is_some_and(|m| q.depth >= m) {
            l.cut.insert(obj.id);
            continue;
        }
        let mut linked = Vec::new();
        for (rid, record, commit) in found {
            linked.push(rid);
            if let Some(&i) = seen_runs.get(&rid) {
                if l.runs[i].commit.is_none() {
                    l.runs[i].commit = commit;
                }
                continue;
            }
            let next = match dir {
                Direction::Up => &record.inputs,
                Direction::Down => &record.outputs,
            };
            let via = Some((record.started.clone(), record.finished.clone()));
            for o in next.values() {
                queue.push_back(Queued {
                    obj: o.clone(),
                    depth: q.depth + 1,
                    via: via.clone(),
                });
            }
            seen_runs.insert(rid, l.runs.len());
            l.runs.push(RunNode {
                id: rid,
                record,
                depth: q.depth + 1,
                commit,
            });
        }
        l.edges.insert(
            obj.id,
            Link {
                runs: linked,
                matched,
            },
        );
    }
    Ok(l)
}

type Found = Vec<(RunId, RunRecord, Option<CommitId>)>;

/// The run that made `obj`, an input of a run that started at `via.0` and finished at
/// `via.1`: by the input's recorded source when it has one (the run of the newest commit in its
/// commit's history with that output), else by content id the newest successful run with that
/// output that started before the consumer finished. Also the commit the object was resolved
/// from, for its tags. The one lookup lineage, `report` and `runs` share.
pub fn producer(
    index: &impl RunIndex,
    obj: &ObjectRef,
    via: Option<(&str, &str)>,
) -> Result<Produced, LineageError> {
    if let Some(InputSource::Commit { commit, .. }) = &obj.source {
        let Some((c, run)) = index.produced_at(*commit, obj.id)? else {
            return Ok(Produced {
                run: None,
                at: Some(*commit),
                matched: Matched::Source,
            });
        };
        let record = index.record(run)?;
        return Ok(Produced {
            run: (record.status == RunStatus::Ok).then_some((run, record)),
            at: Some(c),
            matched: Matched::Source,
        });
    }
    let mut best: Option<(RunId, RunRecord)> = None;
    for rid in index.producing(obj.id)? {
        let record = index.record(rid)?;
        if record.status != RunStatus::Ok {
            continue;
        }
        if via.is_some_and(|(_, finished)| record.started.as_str() > finished) {
            continue; // made after the consumer finished: not where its input came from
        }
        let newer = match &best {
            None => true,
            Some((bid, b)) => (&record.finished, rid) > (&b.finished, *bid),
        };
        if newer {
            best = Some((rid, record));
        }
    }
    Ok(Produced {
        run: best,
        at: None,
        matched: Matched::Content,
    })
}

/// What [`producer`] found.
#[derive(Debug, Clone)]
pub struct Produced {
    /// The producing run (none for a root: seed data, a base model, a failed run's output).
    pub run: Option<(RunId, RunRecord)>,
    /// The commit the object was resolved from, when its source says.
    pub at: Option<CommitId>,
    pub matched: Matched,
}

fn producers(
    index: &impl RunIndex,
    obj: &ObjectRef,
    via: Option<&(String, String)>,
    l: &mut Lineage,
) -> Result<(Found, Matched), LineageError> {
    let p = producer(index, obj, via.map(|(s, f)| (s.as_str(), f.as_str())))?;
    if let Some(c) = p.at {
        l.at.insert(obj.id, c);
    }
    Ok((
        p.run.into_iter().map(|(i, r)| (i, r, p.at)).collect(),
        p.matched,
    ))
}

/// The runs that used `obj`, in the order they happened, none that finished before its
/// producer (`via`) started.
fn consumers(
    index: &impl RunIndex,
    obj: &ObjectRef,
    via: Option<&(String, String)>,
) -> Result<(Found, Matched), LineageError> {
    let mut found = Vec::new();
    let mut all_sourced = true;
    for rid in index.consuming(obj.id)? {
        let record = index.record(rid)?;
        if record.status != RunStatus::Ok {
            continue;
        }
        if via.is_some_and(|(started, _)| record.finished.as_str() < started.as_str()) {
            continue;
        }
        all_sourced &= record
            .inputs
            .values()
            .filter(|i| i.id == obj.id)
            .all(|i| matches!(i.source, Some(InputSource::Commit { .. })));
        found.push((rid, record, None));
    }
    // in the order the runs happened (the index's order is by id, which means nothing)
    found.sort_by(|a, b| (&a.1.started, a.0).cmp(&(&b.1.started, b.0)));
    let matched = if all_sourced {
        Matched::Source
    } else {
        Matched::Content
    };
    Ok((found, matched))
}

/// The objects a lineage walk (or a reproduction) starts from: for `REV:PATH` that entry's
/// object; for a revision, the outputs of its commit's run, or every entry of its tree when the
/// commit has no run; a path (relative to `cwd`) that is not a revision means `HEAD:path`.
/// Each carries the commit it was resolved from as its source.
pub fn start_objects(
    store: &Store,
    cwd: &Path,
    target: &str,
) -> Result<Vec<ObjectRef>, LineageError> {
    let spec =
        if !target.contains(':') && store.resolve(target).is_err() && cwd.join(target).exists() {
            format!("HEAD:{}", store.tree_path(cwd, Path::new(target))?)
        } else {
            target.to_string()
        };
    let sourced = |mut o: ObjectRef, commit: CommitId, run: Option<RunId>| {
        o.source = Some(InputSource::Commit { commit, run });
        o
    };
    if spec.contains(':') {
        let (commit, path, entry) = store.resolve_path(&spec)?;
        let run = store.read_commit(&commit)?.run;
        // a file of a checkpoint folder stands for the checkpoint: one node
        let tree = store.commit_tree(&commit)?;
        let unit = tree
            .units
            .iter()
            .find(|(dir, _)| path.starts_with(&format!("{dir}/")));
        let o = match unit {
            Some((dir, u)) => ObjectRef::new(u.id.0, u.kind, dir.clone()),
            None => ObjectRef::new(entry.id.0, entry.kind, path),
        };
        return Ok(vec![sourced(o, commit, run)]);
    }
    let commit_id = store.resolve(&spec)?;
    let commit = store.read_commit(&commit_id)?;
    if let Some(run) = commit.run {
        let rec = RunRecord::load(store, run)?;
        if !rec.outputs.is_empty() {
            return Ok(rec
                .outputs
                .into_values()
                .map(|o| sourced(o, commit_id, Some(run)))
                .collect());
        }
    }
    // every entry of the tree, a checkpoint folder as one
    let tree = store.read_tree(&commit.tree)?;
    let in_unit = |p: &str| tree.units.keys().any(|d| p.starts_with(&format!("{d}/")));
    let mut entries: Vec<(String, srlm_store::TreeEntry)> = tree
        .entries
        .iter()
        .filter(|(p, _)| !in_unit(p))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    entries.extend(tree.units.clone());
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries
        .into_iter()
        .map(|(path, e)| sourced(ObjectRef::new(e.id.0, e.kind, path), commit_id, commit.run))
        .collect())
}

#[cfg(test)]
mod tests;
