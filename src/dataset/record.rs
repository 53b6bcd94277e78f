//! Row records: what the diff and the statistics need to know about one row (its id, its key
//! hash, a few lengths and scores, its schema), computed once per row so that a row present in
//! both versions of a dataset never has to be parsed again.
use std::collections::HashMap;
use std::hash::BuildHasher;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::kind::{DatasetKind, KeySpec};
use super::DatasetError;

/// BLAKE3 of a row's bytes (for files: the line without its newline; for committed datasets:
/// the store's row id).
pub type RowId = [u8; 32];

/// A hash map for keys that are digests already (row ids, key and content hashes): foldhash
/// instead of SipHash, which dominated a cached diff's profile.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// The hasher of field values (fixed seed: field hashes are cached on disk).
const FIELD_HASH: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x5eed_d1ff);

/// A length slot that the row does not have.
pub const NO_LEN: u32 = u32::MAX;

/// Score slot states (two bits per slot in [`RowRecord::flags`]).
pub const SCORE_ABSENT: u8 = 0;
pub const SCORE_PARSED: u8 = 1;
pub const SCORE_UNPARSED: u8 = 2;
/// Flag bit: `chosen == rejected`.
pub const FLAG_SAME_PAIR: u8 = 1 << 4;

/// One row, reduced to what the diff and the statistics need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowRecord {
    pub id: RowId,
    /// First 16 bytes of the BLAKE3 of the key fields' canonical JSON.
    pub key: u128,
    /// First 16 bytes of the BLAKE3 of the row's fields and compact JSON values: rows that differ
    /// only in spacing or escapes are the same row.
    pub content: u128,
    /// 1-based line in the file (committed datasets: position in the manifest).
    pub line: u32,
    /// Lengths in characters of the side's length fields ([`NO_LEN`]: field absent).
    pub lens: [u32; 3],
    /// Scores of the side's score fields (meaningful when the slot state is [`SCORE_PARSED`]).
    pub scores: [f32; 2],
    /// Score slot states (bits 0-1, 2-3) and [`FLAG_SAME_PAIR`].
    pub flags: u8,
    /// Index into the side's schema table.
    pub schema: u32,
    /// Offset of this row's field hashes in [`SideRecords::field_hashes`].
    pub fields: u32,
}

impl RowRecord {
    /// State of score slot `i`.
    pub fn score_state(&self, i: usize) -> u8 {
        (self.flags >> (2 * i)) & 3
    }
    /// Score of slot `i` if it parsed.
    pub fn score(&self, i: usize) -> Option<f32> {
        (self.score_state(i) == SCORE_PARSED).then_some(self.scores[i])
    }
}

/// A row's schema: its fields in order with their JSON types.
pub type Schema = Vec<(String, String)>;

/// How one side turns rows into records: the shared key, and the side's own statistics fields.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SideSpec {
    pub kind: String,
    /// Key fields (empty: the whole row).
    pub key: Vec<String>,
    pub length_fields: Vec<String>,
    pub score_fields: Vec<String>,
    /// Whether to compare `chosen` with `rejected` (preference pairs).
    pub pairs: bool,
}

impl SideSpec {
    /// The spec for a side whose first row is `first`, with the key shared by both sides.
    pub fn new(kind: DatasetKind, first: &Map<String, Value>, key: &KeySpec) -> SideSpec {
        SideSpec {
            kind: kind.name().into(),
            key: key.fields().to_vec(),
            length_fields: kind.length_fields(first).into_iter().take(3).collect(),
            score_fields: kind.score_fields(first).into_iter().take(2).collect(),
            pairs: kind == DatasetKind::Aift,
        }
    }

    /// The key as a [`KeySpec`].
    pub fn key_spec(&self) -> KeySpec {
        if self.key.is_empty() {
            KeySpec::WholeRow
        } else {
            KeySpec::Fields(self.key.clone())
        }
    }

    /// A short stable digest of the spec (names cache files).
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("spec serialises");
        blake3::hash(&bytes).to_hex()[..16].to_string()
    }
}

/// Parse one line of a JSONL file into an object, with errors naming file and line.
pub fn parse_row(file: &str, line: u64, bytes: &[u8]) -> Result<Map<String, Value>, DatasetError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DatasetError::NotUtf8 {
        file: file.into(),
        line,
        offset: e.valid_up_to(),
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(DatasetError::NotObject {
            file: file.into(),
            line,
        }),
        Err(e) => Err(DatasetError::NotJson {
            file: file.into(),
            line,
            message: e.to_string(),
        }),
    }
}

/// True for lines that hold no row (empty or whitespace only): JSONL readers skip them.
pub fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// Length in characters of a field value: a string's characters; a list of chat messages counts
/// the characters of their `content` (TRL's conversational format); other values their JSON.
pub fn value_len(v: &Value) -> u32 {
    let n = match v {
        Value::String(s) => s.chars().count(),
        Value::Array(items) => return items.iter().map(value_len).fold(0u32, u32::saturating_add),
        Value::Object(m) => match m.get("content") {
            Some(c) => return value_len(c),
            None => v.to_string().chars().count(),
        },
        Value::Null => 0,
        other => other.to_string().chars().count(),
    };
    u32::try_from(n).unwrap_or(NO_LEN - 1)
}

/// A score: a number, a numeric string, a judgement text with `Score: N`, or a list of samples
/// (averaged, as the paper averages three judge samples). `None`: present but unparseable.
pub fn parse_score(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<f64>().ok().or_else(|| {
                let (i, m) = t.match_indices("Score:").last()?;
                let rest = t[i + m.len()..].trim_start();
                let end = rest
                    .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .unwrap_or(rest.len());
                rest[..end].trim_end_matches('.').parse().ok()
            })
        }
        Value::Array(items) if !items.is_empty() => {
            let xs: Option<Vec<f64>> = items.iter().map(parse_score).collect();
            xs.map(|xs| xs.iter().sum::<f64>() / xs.len() as f64)
        }
        _ => None,
    }
    .filter(|x| x.is_finite())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The records of one side, with the tables they index: schemas, and each row's field value
/// hashes (in its schema's field order), so modified rows are compared without re-reading them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideRecords {
    pub records: Vec<RowRecord>,
    pub schemas: Vec<Schema>,
    pub field_hashes: Vec<u64>,
}

impl SideRecords {
    /// The (field name, value hash) pairs of a record of this side.
    pub fn fields<'a>(&'a self, r: &RowRecord) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        let schema = &self.schemas[r.schema as usize];
        let hashes = &self.field_hashes[r.fields as usize..r.fields as usize + schema.len()];
        schema
            .iter()
            .map(|(n, _)| n.as_str())
            .zip(hashes.iter().copied())
    }
}

/// Builds a side's records: interns schemas, appends field hashes.
#[derive(Debug, Default)]
pub struct RecordBuilder {
    pub side: SideRecords,
    index: HashMap<Schema, u32>,
}

impl RecordBuilder {
    fn intern(&mut self, schema: Schema) -> u32 {
        if let Some(&i) = self.index.get(&schema) {
            return i;
        }
        let i = self.side.schemas.len() as u32;
        self.index.insert(schema.clone(), i);
        self.side.schemas.push(schema);
        i
    }

    /// The schema index of `row`. Rows of a dataset nearly always share the last row's schema:
    /// compare with it before building (and allocating) a new one.
    fn intern_row(&mut self, row: &Map<String, Value>) -> u32 {
        if let Some(last) = self.side.records.last().map(|r| r.schema) {
            let s = &self.side.schemas[last as usize];
            if s.len() == row.len()
                && s.iter()
                    .zip(row)
                    .all(|((n, t), (k, v))| n == k && t == type_name(v))
            {
                return last;
            }
        }
        self.intern(
            row.iter()
                .map(|(k, v)| (k.clone(), type_name(v).to_owned()))
                .collect(),
        )
    }

    /// Append a record taken from another side (a row both sides share), at `line`.
    pub fn push_known(&mut self, from: &SideRecords, r: &RowRecord, line: u32) {
        let schema = self.intern(from.schemas[r.schema as usize].clone());
        let fields = self.side.field_hashes.len() as u32;
        self.side
            .field_hashes
            .extend(from.fields(r).map(|(_, h)| h));
        self.side.records.push(RowRecord {
            line,
            schema,
            fields,
            ..*r
        });
    }

    /// Append the record of one parsed row.
    pub fn push_row(
        &mut self,
        spec: &SideSpec,
        key: &KeySpec,
        file: &str,
        line: u32,
        id: RowId,
        row: &Map<String, Value>,
    ) -> Result<(), DatasetError> {
        let r = make_record(spec, key, self, file, line, id, row)?;
        self.side.records.push(r);
        Ok(())
    }

    /// The finished side.
    pub fn finish(self) -> SideRecords {
        self.side
    }
}

/// The record of one parsed row (its schema and field hashes go into `b`).
fn make_record(
    spec: &SideSpec,
    key: &KeySpec,
    b: &mut RecordBuilder,
    file: &str,
    line: u32,
    id: RowId,
    row: &Map<String, Value>,
) -> Result<RowRecord, DatasetError> {
    let key_hash = key
        .key_hash(row)
        .map_err(|field| DatasetError::MissingKey {
            file: file.into(),
            line: line.into(),
            field,
            key: key.describe(),
        })?;
    let mut lens = [NO_LEN; 3];
    for (slot, f) in spec.length_fields.iter().enumerate() {
        if let Some(v) = row.get(f) {
            lens[slot] = value_len(v);
        }
    }
    let mut scores = [0f32; 2];
    let mut flags = 0u8;
    for (slot, f) in spec.score_fields.iter().enumerate() {
        let state = match row.get(f) {
            None | Some(Value::Null) => SCORE_ABSENT,
            Some(v) => match parse_score(v) {
                Some(x) => {
                    scores[slot] = x as f32;
                    SCORE_PARSED
                }
                None => SCORE_UNPARSED,
            },
        };
        flags |= state << (2 * slot);
    }
    if spec.pairs && row.get("chosen").is_some() && row.get("chosen") == row.get("rejected") {
        flags |= FLAG_SAME_PAIR;
    }
    // One serialisation per field gives both the field hashes and the content hash.
    let fields = b.side.field_hashes.len() as u32;
    let mut content = blake3::Hasher::new();
    let mut buf = Vec::new();
    for (k, v) in row {
        buf.clear();
        serde_json::to_writer(&mut buf, v).expect("a JSON value serialises");
        content
            .update(k.as_bytes())
            .update(b"\0")
            .update(&buf)
            .update(b"\0");
        // A 64-bit non-cryptographic hash is enough to tell a changed field (2^-64 to miss one).
        b.side.field_hashes.push(FIELD_HASH.hash_one(&buf[..]));
    }
    let content = u128::from_le_bytes(
        content.finalize().as_bytes()[..16]
            .try_into()
            .expect("16 bytes"),
    );
    let schema = b.intern_row(row);
    Ok(RowRecord {
        id,
        key: key_hash,
        content,
        line,
        lens,
        scores,
        flags,
        schema,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lengths_count_characters_and_chat_contents() {
        assert_eq!(value_len(&json!("héllo")), 5);
        assert_eq!(
            value_len(
                &json!([{"role": "user", "content": "abc"}, {"role": "assistant", "content": "de"}])
            ),
            5
        );
        assert_eq!(value_len(&json!(null)), 0);
    }

    #[test]
    fn scores_parse_from_numbers_strings_judgements_and_samples() {
        assert_eq!(parse_score(&json!(4)), Some(4.0));
        assert_eq!(parse_score(&json!(" 3.5 ")), Some(3.5));
        assert_eq!(
            parse_score(&json!("Clear and complete.\nScore: 5")),
            Some(5.0)
        );
        assert_eq!(parse_score(&json!("Score: 4.")), Some(4.0));
        assert_eq!(parse_score(&json!([4, 5, 3])), Some(4.0));
        assert_eq!(parse_score(&json!("excellent")), None);
        assert_eq!(parse_score(&json!([4, "x"])), None);
        assert_eq!(parse_score(&json!(true)), None);
    }

    #[test]
    fn records_carry_key_lengths_scores_and_flags() {
        let row = json!({"prompt": "p", "chosen": "same", "rejected": "same", "score_chosen": 4, "score_rejected": "n/a"});
        let row = row.as_object().unwrap();
        let key = KeySpec::parse("prompt").unwrap();
        let spec = SideSpec::new(DatasetKind::Aift, row, &key);
        let mut t = RecordBuilder::default();
        let r = make_record(&spec, &key, &mut t, "f.jsonl", 7, [0; 32], row).unwrap();
        assert_eq!(r.lens, [1, 4, 4]);
        assert_eq!(r.score(0), Some(4.0));
        assert_eq!(r.score_state(1), SCORE_UNPARSED);
        assert!(r.flags & FLAG_SAME_PAIR != 0);
        assert_eq!(
            t.side.schemas[r.schema as usize][4],
            ("score_rejected".into(), "string".into())
        );
        t.side.records.push(r);
        let fields: Vec<&str> = t.side.fields(&r).map(|(n, _)| n).collect();
        assert_eq!(
            fields,
            [
                "prompt",
                "chosen",
                "rejected",
                "score_chosen",
                "score_rejected"
            ]
        );
        let h: Vec<u64> = t.side.fields(&r).map(|(_, h)| h).collect();
        assert_eq!(h[1], h[2], "equal values hash equal");
        assert_ne!(h[0], h[1]);
        // Re-spacing a row keeps its content hash.
        let spaced = parse_row("f", 1, br#"{ "prompt" : "p", "chosen":"same","rejected":"same","score_chosen":4,"score_rejected":"n/a"}"#).unwrap();
        let r2 = make_record(&spec, &key, &mut t, "f.jsonl", 8, [1; 32], &spaced).unwrap();
        assert_eq!(r2.content, r.content);

        let bad = json!({"chosen": "c", "rejected": "r"});
        let e = make_record(
            &spec,
            &key,
            &mut t,
            "f.jsonl",
            9,
            [0; 32],
            bad.as_object().unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string().split(" (").next().unwrap(),
            "f.jsonl:9: field `prompt` is missing"
        );
    }

    #[test]
    fn parse_errors_name_file_and_line() {
        assert!(matches!(
            parse_row("a", 3, b"{\"x\": 1"),
            Err(DatasetError::NotJson { line: 3, .. })
        ));
        assert!(matches!(
            parse_row("a", 4, b"[1]"),
            Err(DatasetError::NotObject { line: 4, .. })
        ));
        let e = parse_row("a", 5, b"{\"x\": \"\xff\"}").unwrap_err();
        assert_eq!(e.to_string(), "a:5: not valid UTF-8 (byte 7 of the line)");
    }
}
