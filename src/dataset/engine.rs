//! The row-level diff engine, shared by file and committed datasets. It works on row records
//! (id, key hash, statistics numbers): rows whose id is on both sides are unchanged and are never
//! fetched; the remaining rows are matched by key (same key on both sides: modified; else added
//! or removed), and only they are fetched and parsed to find which fields changed.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};

use super::kind::{DatasetKind, KeySpec};
use super::record::{parse_row, FastMap, RowRecord, Schema, SideRecords, SideSpec};
use super::stats::SideStats;
use super::DatasetError;

/// Options of one diff.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Key override (`--key`); `None`: the natural key of the detected kind.
    pub key: Option<KeySpec>,
    /// Example rows per class (added, removed, modified).
    pub limit: usize,
    /// Summary and statistics only: no row is fetched (`--stat`).
    pub stat_only: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            key: None,
            limit: 3,
            stat_only: false,
        }
    }
}

/// Receives fetched rows: `(index into the wanted records, row bytes)`.
pub type RowSink<'a> = dyn FnMut(usize, &[u8]) -> Result<(), DatasetError> + 'a;

/// Fetches the bytes of some rows of one side.
pub trait RowFetch {
    /// Call `f(i, bytes)` for each `wanted[i]` (sorted by line), in order.
    fn fetch(&mut self, wanted: &[RowRecord], f: &mut RowSink) -> Result<(), DatasetError>;
}

/// One side of a dataset diff, ready for the engine.
pub struct Side<'a> {
    /// The file path or `REV:path` (errors and output name it).
    pub label: String,
    pub spec: SideSpec,
    pub data: SideRecords,
    pub rows: &'a mut dyn RowFetch,
}

/// What the output says about one side.
#[derive(Debug, Clone, Serialize)]
pub struct SideInfo {
    pub label: String,
    pub kind: String,
    /// Keys that occur on more than one row.
    pub duplicate_keys: u64,
    /// Rows beyond the first of each duplicate key.
    pub duplicate_rows: u64,
    pub stats: SideStats,
}

/// Row counts by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub unchanged: u64,
    /// Of the unchanged rows, those whose bytes differ (spacing, escapes, `\r\n` line ends):
    /// the same row to the diff, but not the same file to the store.
    pub reformatted: u64,
}

/// A field added, removed, or whose JSON type changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaChange {
    pub field: String,
    /// `added`, `removed` or `type_changed`.
    pub change: String,
    /// JSON types of the field on each side (empty where absent).
    pub a_types: Vec<String>,
    pub b_types: Vec<String>,
}

/// An added or removed row.
#[derive(Debug, Clone, Serialize)]
pub struct RowExample {
    pub line: u32,
    pub row: Value,
}

/// One word-level edit of a string field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WordOp {
    /// `equal`, `delete` or `insert`.
    pub op: &'static str,
    pub text: String,
}

/// A field of a modified row.
#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    pub field: String,
    /// The value on each side (`null` where the field is absent).
    pub a: Option<Value>,
    pub b: Option<Value>,
    /// Word-level edit script when both values are strings.
    pub words: Option<Vec<WordOp>>,
}

/// A modified row: same key, different content.
#[derive(Debug, Clone, Serialize)]
pub struct ModifiedExample {
    pub line_a: u32,
    pub line_b: u32,
    /// The key fields' values (the whole row's key: `null`).
    pub key: Value,
    pub changes: Vec<FieldChange>,
}

/// Example rows per class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Examples {
    pub added: Vec<RowExample>,
    pub removed: Vec<RowExample>,
    pub modified: Vec<ModifiedExample>,
}

/// The row-level diff of one dataset.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetDiff {
    pub key: String,
    pub a: SideInfo,
    pub b: SideInfo,
    pub summary: Summary,
    pub schema_changes: Vec<SchemaChange>,
    /// Field → modified rows in which it changed (`None` with `--stat`).
    pub field_changes: Option<BTreeMap<String, u64>>,
    /// `None` with `--stat`.
    pub examples: Option<Examples>,
}

/// Split a string into words and the whitespace between them, for `similar`'s word diff.
pub fn word_diff(a: &str, b: &str) -> Vec<WordOp> {
    let diff = similar::TextDiff::configure()
        .algorithm(similar::Algorithm::Patience)
        .diff_words(a, b);
    let mut ops: Vec<WordOp> = Vec::new();
    for change in diff.iter_all_changes() {
        let op = match change.tag() {
            similar::ChangeTag::Equal => "equal",
            similar::ChangeTag::Delete => "delete",
            similar::ChangeTag::Insert => "insert",
        };
        // Merge runs of the same op so the output is a short edit script.
        match ops.last_mut() {
            Some(last) if last.op == op => last.text.push_str(change.value()),
            _ => ops.push(WordOp {
                op,
                text: change.value().to_owned(),
            }),
        }
    }
    ops
}

fn field_types(schemas: &[Schema], records: &[RowRecord]) -> BTreeMap<String, BTreeSet<String>> {
    let mut used = vec![false; schemas.len()];
    for r in records {
        used[r.schema as usize] = true;
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (schema, _) in schemas.iter().zip(&used).filter(|(_, u)| **u) {
        for (f, t) in schema {
            out.entry(f.clone()).or_default().insert(t.clone());
        }
    }
    out
}

fn schema_changes(a: &Side, b: &Side) -> Vec<SchemaChange> {
    let ta = field_types(&a.data.schemas, &a.data.records);
    let tb = field_types(&b.data.schemas, &b.data.records);
    let fields: BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
    let mut out = Vec::new();
    for f in fields {
        let (x, y) = (ta.get(f), tb.get(f));
        let change = match (x, y) {
            (None, Some(_)) => "added",
            (Some(_), None) => "removed",
            (Some(x), Some(y)) if x != y => "type_changed",
            _ => continue,
        };
        let list = |s: Option<&BTreeSet<String>>| {
            s.map(|s| s.iter().cloned().collect()).unwrap_or_default()
        };
        out.push(SchemaChange {
            field: f.clone(),
            change: change.into(),
            a_types: list(x),
            b_types: list(y),
        });
    }
    out
}

fn duplicates(records: &[RowRecord]) -> (u64, u64) {
    let mut counts: FastMap<u128, u32> =
        FastMap::with_capacity_and_hasher(records.len(), Default::default());
    for r in records {
        *counts.entry(r.key).or_default() += 1;
    }
    let keys = counts.values().filter(|&&c| c > 1).count() as u64;
    let rows = counts.values().map(|&c| c.saturating_sub(1) as u64).sum();
    (keys, rows)
}

/// Unchanged rows of `b` (by content) whose exact bytes appear in no unchanged row of `a`.
fn reformatted_rows(a: &[RowRecord], am: &[bool], b: &[RowRecord], bm: &[bool]) -> u64 {
    let ids: std::collections::HashSet<&super::record::RowId> = a
        .iter()
        .zip(am)
        .filter(|(_, &u)| u)
        .map(|(r, _)| &r.id)
        .collect();
    b.iter()
        .zip(bm)
        .filter(|(r, &u)| u && !ids.contains(&r.id))
        .count() as u64
}

/// Which records of each side are unchanged: contents matched as multisets (a row repeated
/// twice on one side and once on the other is once unchanged, once removed).
fn unchanged_masks(a: &[RowRecord], b: &[RowRecord]) -> (Vec<bool>, Vec<bool>) {
    let mut avail: FastMap<u128, u32> =
        FastMap::with_capacity_and_hasher(a.len(), Default::default());
    for r in a {
        *avail.entry(r.content).or_default() += 1;
    }
    // Take one from a count, if any is left.
    fn take(counts: &mut FastMap<u128, u32>, k: u128) -> bool {
        match counts.get_mut(&k) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
    let mut matched: FastMap<u128, u32> = FastMap::default();
    let b_mask: Vec<bool> = b
        .iter()
        .map(|r| {
            let hit = take(&mut avail, r.content);
            if hit {
                *matched.entry(r.content).or_default() += 1;
            }
            hit
        })
        .collect();
    let a_mask = a.iter().map(|r| take(&mut matched, r.content)).collect();
    (a_mask, b_mask)
}

fn key_value(key: &KeySpec, row: &Map<String, Value>) -> Value {
    match key {
        KeySpec::WholeRow => Value::Null,
        KeySpec::Fields(f) => Value::Object(
            f.iter()
                .map(|f| (f.clone(), row.get(f).cloned().unwrap_or(Value::Null)))
                .collect(),
        ),
    }
}

/// Fetch `idx` (indexes into `side.records`, any order) and hand each parsed row to `f`.
fn fetch_parsed(
    side: &mut Side,
    idx: &[usize],
    f: &mut dyn FnMut(usize, Map<String, Value>),
) -> Result<(), DatasetError> {
    let mut order: Vec<usize> = idx.to_vec();
    order.sort_by_key(|&i| side.data.records[i].line);
    let wanted: Vec<RowRecord> = order.iter().map(|&i| side.data.records[i]).collect();
    let label = side.label.clone();
    side.rows.fetch(&wanted, &mut |k, bytes| {
        let row = parse_row(&label, wanted[k].line as u64, bytes)?;
        f(order[k], row);
        Ok(())
    })
}

/// The specs of several versions of a dataset from their first rows (`None`: no rows) and an
/// optional key override. Without one, the key is the natural key of the detected kind when all
/// non-empty versions agree on it, else the whole row. An empty version borrows the fields of
/// the first non-empty one for its statistics.
pub fn plan_many(firsts: &[Option<Map<String, Value>>], key: Option<&KeySpec>) -> Vec<SideSpec> {
    let key = match key {
        Some(k) => k.clone(),
        None => {
            let mut naturals = firsts
                .iter()
                .flatten()
                .map(|r| DatasetKind::detect(r).natural_key(r));
            let first = naturals.next().unwrap_or(KeySpec::WholeRow);
            if naturals.all(|k| k == first) {
                first
            } else {
                KeySpec::WholeRow
            }
        }
    };
    let empty = Map::new();
    let fallback = firsts.iter().flatten().next().unwrap_or(&empty);
    firsts
        .iter()
        .map(|r| {
            let r = r.as_ref().unwrap_or(fallback);
            SideSpec::new(DatasetKind::detect(r), r, &key)
        })
        .collect()
}

/// The fields that differ between two records (changed value, or present on one side only),
/// in b's field order then a's.
fn changed_fields(a: &SideRecords, ra: &RowRecord, b: &SideRecords, rb: &RowRecord) -> Vec<String> {
    let old: Vec<(&str, u64)> = a.fields(ra).collect();
    let new: Vec<(&str, u64)> = b.fields(rb).collect();
    let mut out: Vec<String> = new
        .iter()
        .filter(|(n, h)| !old.iter().any(|(m, g)| m == n && g == h))
        .map(|(n, _)| n.to_string())
        .collect();
    out.extend(
        old.iter()
            .filter(|(m, _)| !new.iter().any(|(n, _)| n == m))
            .map(|(m, _)| m.to_string()),
    );
    out
}

/// Diff two sides.
pub fn diff(mut a: Side, mut b: Side, opts: &DiffOptions) -> Result<DatasetDiff, DatasetError> {
    let key = a.spec.key_spec();
    let (a_mask, b_mask) = unchanged_masks(&a.data.records, &b.data.records);
    let unchanged = b_mask.iter().filter(|&&u| u).count() as u64;
    let reformatted = reformatted_rows(&a.data.records, &a_mask, &b.data.records, &b_mask);

    // Group the one-sided rows by key: pairs of (removed, added) with one key are modified.
    let mut by_key: FastMap<u128, (Vec<usize>, Vec<usize>)> = FastMap::default();
    for (i, r) in a
        .data
        .records
        .iter()
        .enumerate()
        .filter(|(i, _)| !a_mask[*i])
    {
        by_key.entry(r.key).or_default().0.push(i);
    }
    for (i, r) in b
        .data
        .records
        .iter()
        .enumerate()
        .filter(|(i, _)| !b_mask[*i])
    {
        by_key.entry(r.key).or_default().1.push(i);
    }
    let (mut removed, mut added, mut pairs) = (Vec::new(), Vec::new(), Vec::new());
    for (xs, ys) in by_key.into_values() {
        let n = xs.len().min(ys.len());
        pairs.extend(xs[..n].iter().copied().zip(ys[..n].iter().copied()));
        removed.extend_from_slice(&xs[n..]);
        added.extend_from_slice(&ys[n..]);
    }
    removed.sort_unstable();
    added.sort_unstable();
    pairs.sort_unstable_by_key(|&(_, y)| y);
    let summary = Summary {
        added: added.len() as u64,
        removed: removed.len() as u64,
        modified: pairs.len() as u64,
        unchanged,
        reformatted,
    };

    let (mut field_changes, mut examples) = (None, None);
    if !opts.stat_only {
        // Which fields changed, from the records' field hashes: no row is read for this.
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut shown_changes = Vec::new();
        for (p, &(x, y)) in pairs.iter().enumerate() {
            let changed = changed_fields(&a.data, &a.data.records[x], &b.data, &b.data.records[y]);
            for f in &changed {
                *counts.entry(f.clone()).or_default() += 1;
            }
            if p < opts.limit {
                shown_changes.push(changed);
            }
        }
        // Examples: only these rows are read.
        let limit = opts.limit;
        let shown = &pairs[..pairs.len().min(limit)];
        let mut ex = Examples::default();
        let mut a_rows: HashMap<usize, Map<String, Value>> = HashMap::new();
        let want_a: Vec<usize> = shown
            .iter()
            .map(|&(x, _)| x)
            .chain(removed.iter().copied().take(limit))
            .collect();
        fetch_parsed(&mut a, &want_a, &mut |i, row| {
            a_rows.insert(i, row);
        })?;
        let mut b_rows: HashMap<usize, Map<String, Value>> = HashMap::new();
        let want_b: Vec<usize> = shown
            .iter()
            .map(|&(_, y)| y)
            .chain(added.iter().copied().take(limit))
            .collect();
        fetch_parsed(&mut b, &want_b, &mut |i, row| {
            b_rows.insert(i, row);
        })?;
        for &i in removed.iter().take(limit) {
            let row = a_rows.get(&i).cloned().unwrap_or_default();
            ex.removed.push(RowExample {
                line: a.data.records[i].line,
                row: Value::Object(row),
            });
        }
        for &i in added.iter().take(limit) {
            let row = b_rows.get(&i).cloned().unwrap_or_default();
            ex.added.push(RowExample {
                line: b.data.records[i].line,
                row: Value::Object(row),
            });
        }
        for (&(x, y), changed) in shown.iter().zip(shown_changes) {
            let (old, new) = (
                a_rows.get(&x).cloned().unwrap_or_default(),
                b_rows.get(&y).cloned().unwrap_or_default(),
            );
            let changes = changed
                .into_iter()
                .map(|f| {
                    let (va, vb) = (old.get(&f).cloned(), new.get(&f).cloned());
                    let words = match (&va, &vb) {
                        (Some(Value::String(s)), Some(Value::String(t))) => Some(word_diff(s, t)),
                        _ => None,
                    };
                    FieldChange {
                        field: f,
                        a: va,
                        b: vb,
                        words,
                    }
                })
                .collect();
            ex.modified.push(ModifiedExample {
                line_a: a.data.records[x].line,
                line_b: b.data.records[y].line,
                key: key_value(&key, &new),
                changes,
            });
        }
        field_changes = Some(counts);
        examples = Some(ex);
    }

    let side_info = |s: &Side| {
        let (duplicate_keys, duplicate_rows) = duplicates(&s.data.records);
        SideInfo {
            label: s.label.clone(),
            kind: s.spec.kind.clone(),
            duplicate_keys,
            duplicate_rows,
            stats: SideStats::compute(&s.spec, &s.data.records),
        }
    };
    Ok(DatasetDiff {
        key: key.describe(),
        schema_changes: schema_changes(&a, &b),
        a: side_info(&a),
        b: side_info(&b),
        summary,
        field_changes,
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_diff_marks_changed_words_only() {
        let ops = word_diff("the cat sat on the mat", "the dog sat on the mat");
        let changed: Vec<(&str, &str)> = ops
            .iter()
            .filter(|o| o.op != "equal")
            .map(|o| (o.op, o.text.as_str()))
            .collect();
        assert_eq!(changed, vec![("delete", "cat"), ("insert", "dog")]);
        let joined: String = ops
            .iter()
            .filter(|o| o.op != "delete")
            .map(|o| o.text.as_str())
            .collect();
        assert_eq!(joined, "the dog sat on the mat");
    }

    fn rec(id: u8, key: u128) -> RowRecord {
        RowRecord {
            id: [id; 32],
            key,
            content: id as u128,
            line: id as u32,
            lens: [0; 3],
            scores: [0.0; 2],
            flags: 0,
            schema: 0,
            fields: 0,
        }
    }

    #[test]
    fn repeated_rows_match_as_multisets() {
        let a = [rec(1, 1), rec(1, 1), rec(2, 2)];
        let b = [rec(1, 1), rec(3, 3)];
        let (am, bm) = unchanged_masks(&a, &b);
        assert_eq!(am, vec![true, false, false]);
        assert_eq!(bm, vec![true, false]);
        assert_eq!(duplicates(&a), (1, 1));
        assert_eq!(duplicates(&b), (0, 0));
    }
}
