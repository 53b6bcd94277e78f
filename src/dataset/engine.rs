//! The row-level diff engine, shared by file and committed datasets. It works on row records
//! (id, key hash, statistics numbers): rows whose id is on both sides are unchanged and are never
//! fetched; the remaining rows are matched by key (same key on both sides: modified; else added
//! or removed), and only they are fetched and parsed to find which fields changed.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{Map, Value};

use super::kind::{DatasetKind, KeySpec};
use super::record::{hash128, parse_row, RowRecord, Schema, SideSpec};
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
        DiffOptions { key: None, limit: 3, stat_only: false }
    }
}

/// Fetches the bytes of some rows of one side.
pub trait RowFetch {
    /// Call `f(i, bytes)` for each `wanted[i]` (sorted by line), in order.
    fn fetch(
        &mut self,
        wanted: &[RowRecord],
        f: &mut dyn FnMut(usize, &[u8]) -> Result<(), DatasetError>,
    ) -> Result<(), DatasetError>;
}

/// One side of a dataset diff, ready for the engine.
pub struct Side<'a> {
    /// The file path or `REV:path` (errors and output name it).
    pub label: String,
    pub spec: SideSpec,
    pub records: Vec<RowRecord>,
    pub schemas: Vec<Schema>,
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
            _ => ops.push(WordOp { op, text: change.value().to_owned() }),
        }
    }
    ops
}

fn field_hash(v: &Value) -> u128 {
    hash128(&serde_json::to_vec(v).expect("JSON value serialises"))
}

fn field_types(schemas: &[Schema], records: &[RowRecord]) -> BTreeMap<String, BTreeSet<String>> {
    let used: BTreeSet<u32> = records.iter().map(|r| r.schema).collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in used {
        for (f, t) in &schemas[i as usize] {
            out.entry(f.clone()).or_default().insert(t.clone());
        }
    }
    out
}

fn schema_changes(a: &Side, b: &Side) -> Vec<SchemaChange> {
    let ta = field_types(&a.schemas, &a.records);
    let tb = field_types(&b.schemas, &b.records);
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
        let list = |s: Option<&BTreeSet<String>>| s.map(|s| s.iter().cloned().collect()).unwrap_or_default();
        out.push(SchemaChange { field: f.clone(), change: change.into(), a_types: list(x), b_types: list(y) });
    }
    out
}

fn duplicates(records: &[RowRecord]) -> (u64, u64) {
    let mut counts: HashMap<u128, u32> = HashMap::with_capacity(records.len());
    for r in records {
        *counts.entry(r.key).or_default() += 1;
    }
    let keys = counts.values().filter(|&&c| c > 1).count() as u64;
    let rows = counts.values().map(|&c| c.saturating_sub(1) as u64).sum();
    (keys, rows)
}

/// Which records of each side are unchanged: contents matched as multisets (a row repeated
/// twice on one side and once on the other is once unchanged, once removed).
fn unchanged_masks(a: &[RowRecord], b: &[RowRecord]) -> (Vec<bool>, Vec<bool>) {
    let mut avail: HashMap<u128, u32> = HashMap::with_capacity(a.len());
    for r in a {
        *avail.entry(r.content).or_default() += 1;
    }
    let mut matched: HashMap<u128, u32> = HashMap::new();
    let b_mask: Vec<bool> = b
        .iter()
        .map(|r| match avail.get_mut(&r.content) {
            Some(n) if *n > 0 => {
                *n -= 1;
                *matched.entry(r.content).or_default() += 1;
                true
            }
            _ => false,
        })
        .collect();
    let a_mask = a
        .iter()
        .map(|r| match matched.get_mut(&r.content) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        })
        .collect();
    (a_mask, b_mask)
}

fn key_value(key: &KeySpec, row: &Map<String, Value>) -> Value {
    match key {
        KeySpec::WholeRow => Value::Null,
        KeySpec::Fields(f) => Value::Object(f.iter().map(|f| (f.clone(), row.get(f).cloned().unwrap_or(Value::Null))).collect()),
    }
}

/// Fetch `idx` (indexes into `side.records`, any order) and hand each parsed row to `f`.
fn fetch_parsed(
    side: &mut Side,
    idx: &[usize],
    f: &mut dyn FnMut(usize, Map<String, Value>),
) -> Result<(), DatasetError> {
    let mut order: Vec<usize> = idx.to_vec();
    order.sort_by_key(|&i| side.records[i].line);
    let wanted: Vec<RowRecord> = order.iter().map(|&i| side.records[i]).collect();
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
            let mut naturals = firsts.iter().flatten().map(|r| DatasetKind::detect(r).natural_key(r));
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

/// Diff two sides.
pub fn diff(mut a: Side, mut b: Side, opts: &DiffOptions) -> Result<DatasetDiff, DatasetError> {
    let key = a.spec.key_spec();
    let (a_mask, b_mask) = unchanged_masks(&a.records, &b.records);
    let unchanged = b_mask.iter().filter(|&&u| u).count() as u64;

    // Group the one-sided rows by key: pairs of (removed, added) with one key are modified.
    let mut by_key: HashMap<u128, (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (i, r) in a.records.iter().enumerate().filter(|(i, _)| !a_mask[*i]) {
        by_key.entry(r.key).or_default().0.push(i);
    }
    for (i, r) in b.records.iter().enumerate().filter(|(i, _)| !b_mask[*i]) {
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
    };

    let (mut field_changes, mut examples) = (None, None);
    if !opts.stat_only {
        let limit = opts.limit;
        let mut ex = Examples::default();
        // Side A: hash the fields of modified rows; keep example rows whole.
        let pair_of_a: HashMap<usize, usize> = pairs.iter().enumerate().map(|(p, &(x, _))| (x, p)).collect();
        let pair_of_b: HashMap<usize, usize> = pairs.iter().enumerate().map(|(p, &(_, y))| (y, p)).collect();
        let mut a_hashes: Vec<Vec<(String, u128)>> = vec![Vec::new(); pairs.len()];
        let mut a_rows: HashMap<usize, Map<String, Value>> = HashMap::new();
        let removed_shown: BTreeSet<usize> = removed.iter().copied().take(limit).collect();
        let mut want_a: Vec<usize> = pairs.iter().map(|&(x, _)| x).collect();
        want_a.extend(removed_shown.iter().copied());
        let mut removed_rows = BTreeMap::new();
        fetch_parsed(&mut a, &want_a, &mut |i, row| {
            if let Some(&p) = pair_of_a.get(&i) {
                a_hashes[p] = row.iter().map(|(k, v)| (k.clone(), field_hash(v))).collect();
                if p < limit {
                    a_rows.insert(p, row);
                }
            } else {
                removed_rows.insert(i, row);
            }
        })?;
        for (i, row) in removed_rows {
            ex.removed.push(RowExample { line: a.records[i].line, row: Value::Object(row) });
        }
        // Side B: compare with A's field hashes.
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let added_shown: BTreeSet<usize> = added.iter().copied().take(limit).collect();
        let mut want_b: Vec<usize> = pairs.iter().map(|&(_, y)| y).collect();
        want_b.extend(added_shown.iter().copied());
        let mut added_rows = BTreeMap::new();
        let mut modified_rows = BTreeMap::new();
        fetch_parsed(&mut b, &want_b, &mut |i, row| {
            let Some(&p) = pair_of_b.get(&i) else {
                added_rows.insert(i, row);
                return;
            };
            let old: HashMap<&str, u128> = a_hashes[p].iter().map(|(k, h)| (k.as_str(), *h)).collect();
            let mut changed: Vec<String> = row
                .iter()
                .filter(|(k, v)| old.get(k.as_str()) != Some(&field_hash(v)))
                .map(|(k, _)| k.clone())
                .collect();
            changed.extend(a_hashes[p].iter().filter(|(k, _)| !row.contains_key(k)).map(|(k, _)| k.clone()));
            for f in &changed {
                *counts.entry(f.clone()).or_default() += 1;
            }
            if p < limit {
                modified_rows.insert(p, (changed, row));
            }
        })?;
        for (i, row) in added_rows {
            ex.added.push(RowExample { line: b.records[i].line, row: Value::Object(row) });
        }
        for (p, (changed, new)) in modified_rows {
            let old = a_rows.remove(&p).unwrap_or_default();
            let changes = changed
                .into_iter()
                .map(|f| {
                    let (x, y) = (old.get(&f).cloned(), new.get(&f).cloned());
                    let words = match (&x, &y) {
                        (Some(Value::String(s)), Some(Value::String(t))) => Some(word_diff(s, t)),
                        _ => None,
                    };
                    FieldChange { field: f, a: x, b: y, words }
                })
                .collect();
            let (x, y) = pairs[p];
            ex.modified.push(ModifiedExample {
                line_a: a.records[x].line,
                line_b: b.records[y].line,
                key: key_value(&key, &new),
                changes,
            });
        }
        field_changes = Some(counts);
        examples = Some(ex);
    }

    let side_info = |s: &Side| {
        let (duplicate_keys, duplicate_rows) = duplicates(&s.records);
        SideInfo {
            label: s.label.clone(),
            kind: s.spec.kind.clone(),
            duplicate_keys,
            duplicate_rows,
            stats: SideStats::compute(&s.spec, &s.records),
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
        let changed: Vec<(&str, &str)> = ops.iter().filter(|o| o.op != "equal").map(|o| (o.op, o.text.as_str())).collect();
        assert_eq!(changed, vec![("delete", "cat"), ("insert", "dog")]);
        let joined: String = ops.iter().filter(|o| o.op != "delete").map(|o| o.text.as_str()).collect();
        assert_eq!(joined, "the dog sat on the mat");
    }

    fn rec(id: u8, key: u128) -> RowRecord {
        RowRecord { id: [id; 32], key, content: id as u128, line: id as u32, lens: [0; 3], scores: [0.0; 2], flags: 0, schema: 0 }
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
