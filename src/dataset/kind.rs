//! Dataset kinds of the self-rewarding loop, recognised from a row's fields, and their natural
//! keys (the fields that identify "the same row" across two versions of a dataset).
use serde_json::{Map, Value};

/// What a JSONL dataset holds, recognised from the fields of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// Instruction fine-tuning: (instruction, answer).
    Ift,
    /// Evaluation fine-tuning: (judge prompt, justified judgement ending in `Score: N`).
    Eft,
    /// Generated prompts.
    Prompts,
    /// Candidate responses: prompt id (or prompt) + candidate text + candidate index.
    Responses,
    /// Judgements: a response with its score(s) and the raw judgement text.
    Judgements,
    /// AIFT preference pairs in TRL format: `prompt`, `chosen`, `rejected`, optional scores.
    Aift,
    /// Anything else: the whole row is the key.
    Other,
}

const PROMPT_FIELDS: &[&str] = &["prompt", "instruction", "question"];
const ANSWER_FIELDS: &[&str] = &["response", "completion", "output", "answer"];
const PROMPT_ID_FIELDS: &[&str] = &["prompt_id"];
const CANDIDATE_FIELDS: &[&str] = &[
    "response",
    "response_text",
    "candidate",
    "completion",
    "text",
];
const INDEX_FIELDS: &[&str] = &[
    "index",
    "candidate_index",
    "response_index",
    "candidate_id",
    "response_id",
];
const SCORE_FIELDS: &[&str] = &["score", "scores"];
const JUDGEMENT_FIELDS: &[&str] = &["judgement", "judgment", "evaluation", "judge_output"];
/// Score fields of a TRL preference pair (`score_chosen` is TRL/UltraFeedback's spelling).
pub const CHOSEN_SCORE_FIELDS: &[&str] = &["score_chosen", "chosen_score"];
/// See [`CHOSEN_SCORE_FIELDS`].
pub const REJECTED_SCORE_FIELDS: &[&str] = &["score_rejected", "rejected_score"];

fn first_present<'a>(row: &Map<String, Value>, names: &[&'a str]) -> Option<&'a str> {
    names.iter().copied().find(|n| row.contains_key(*n))
}

/// True when a judgement text ends its reasoning with the rubric's `Score: N`.
pub fn has_score_line(text: &str) -> bool {
    text.match_indices("Score:").any(|(i, m)| {
        text[i + m.len()..]
            .trim_start()
            .starts_with(|c: char| c.is_ascii_digit())
    })
}

impl DatasetKind {
    /// Recognise the kind from one row (the first row of a dataset).
    pub fn detect(row: &Map<String, Value>) -> DatasetKind {
        let has = |n: &str| row.contains_key(n);
        if has("chosen") && has("rejected") {
            return DatasetKind::Aift;
        }
        let prompt = first_present(row, PROMPT_FIELDS);
        let prompt_id = first_present(row, PROMPT_ID_FIELDS);
        if first_present(row, JUDGEMENT_FIELDS).is_some()
            || (prompt_id.is_some() && first_present(row, SCORE_FIELDS).is_some())
        {
            return DatasetKind::Judgements;
        }
        let candidate = first_present(row, CANDIDATE_FIELDS);
        let index = first_present(row, INDEX_FIELDS);
        if (prompt_id.is_some() || prompt.is_some())
            && candidate.is_some()
            && (index.is_some() || prompt_id.is_some())
        {
            return DatasetKind::Responses;
        }
        if let (Some(_), Some(answer)) = (prompt, first_present(row, ANSWER_FIELDS)) {
            let judged = row
                .get(answer)
                .and_then(Value::as_str)
                .is_some_and(has_score_line);
            return if judged {
                DatasetKind::Eft
            } else {
                DatasetKind::Ift
            };
        }
        if prompt.is_some()
            && row.keys().all(|k| {
                PROMPT_FIELDS.contains(&k.as_str())
                    || matches!(k.as_str(), "prompt_id" | "source" | "id")
            })
        {
            return DatasetKind::Prompts;
        }
        DatasetKind::Other
    }

    /// Stable lower-case name (used in JSON output and cache files).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Ift => "ift",
            DatasetKind::Eft => "eft",
            DatasetKind::Prompts => "prompts",
            DatasetKind::Responses => "responses",
            DatasetKind::Judgements => "judgements",
            DatasetKind::Aift => "aift",
            DatasetKind::Other => "other",
        }
    }

    /// The natural key of this kind, resolved against the field names of `row`.
    pub fn natural_key(self, row: &Map<String, Value>) -> KeySpec {
        let fields = |v: Vec<Option<&str>>| -> KeySpec {
            let f: Vec<String> = v.into_iter().flatten().map(str::to_owned).collect();
            if f.is_empty() {
                KeySpec::WholeRow
            } else {
                KeySpec::Fields(f)
            }
        };
        let prompt = first_present(row, PROMPT_FIELDS);
        match self {
            DatasetKind::Ift => {
                // A ranked IFT file holds several answers per question: the rank tells them apart.
                let rank = row.contains_key("rank").then_some("rank");
                fields(vec![prompt, rank])
            }
            DatasetKind::Eft => fields(vec![prompt, first_present(row, ANSWER_FIELDS)]),
            DatasetKind::Prompts => fields(vec![prompt]),
            DatasetKind::Responses | DatasetKind::Judgements => {
                let who = first_present(row, PROMPT_ID_FIELDS).or(prompt);
                fields(vec![who, first_present(row, INDEX_FIELDS)])
            }
            DatasetKind::Aift => fields(vec![prompt]),
            DatasetKind::Other => KeySpec::WholeRow,
        }
    }

    /// The fields whose lengths (in characters) the statistics report, in slot order.
    pub fn length_fields(self, row: &Map<String, Value>) -> Vec<String> {
        let pick = |names: &[&str]| first_present(row, names).map(str::to_owned);
        let v = match self {
            DatasetKind::Aift => vec![
                pick(PROMPT_FIELDS),
                Some("chosen".into()),
                Some("rejected".into()),
            ],
            DatasetKind::Ift | DatasetKind::Eft => vec![pick(PROMPT_FIELDS), pick(ANSWER_FIELDS)],
            DatasetKind::Prompts => vec![pick(PROMPT_FIELDS)],
            DatasetKind::Responses => vec![pick(CANDIDATE_FIELDS)],
            DatasetKind::Judgements => vec![pick(CANDIDATE_FIELDS), pick(JUDGEMENT_FIELDS)],
            DatasetKind::Other => vec![],
        };
        v.into_iter().flatten().collect()
    }

    /// The score fields the statistics histogram, in slot order (`None`: no such slot).
    pub fn score_fields(self, row: &Map<String, Value>) -> Vec<String> {
        match self {
            DatasetKind::Aift => {
                let c = first_present(row, CHOSEN_SCORE_FIELDS).unwrap_or(CHOSEN_SCORE_FIELDS[0]);
                let r =
                    first_present(row, REJECTED_SCORE_FIELDS).unwrap_or(REJECTED_SCORE_FIELDS[0]);
                vec![c.to_owned(), r.to_owned()]
            }
            DatasetKind::Judgements => vec![first_present(row, SCORE_FIELDS)
                .unwrap_or("score")
                .to_owned()],
            _ => vec![],
        }
    }
}

/// Which fields identify a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// These fields' values, in this order.
    Fields(Vec<String>),
    /// The whole row (plain JSONL).
    WholeRow,
}

impl KeySpec {
    /// Parse `--key FIELD[,FIELD]`.
    pub fn parse(s: &str) -> Option<KeySpec> {
        let f: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        (!f.is_empty()).then_some(KeySpec::Fields(f))
    }

    /// The field names (empty for the whole row).
    pub fn fields(&self) -> &[String] {
        match self {
            KeySpec::Fields(f) => f,
            KeySpec::WholeRow => &[],
        }
    }

    /// A short description: `prompt`, `prompt_id,index` or `(whole row)`.
    pub fn describe(&self) -> String {
        match self {
            KeySpec::Fields(f) => f.join(","),
            KeySpec::WholeRow => "(whole row)".into(),
        }
    }

    /// Hash this row's key. `Err(field)` names the first key field the row lacks.
    pub fn key_hash(&self, row: &Map<String, Value>) -> Result<u128, String> {
        let mut h = blake3::Hasher::new();
        match self {
            KeySpec::WholeRow => {
                // Canonical bytes (serde_json's compact form), not the line's, so that re-spacing a
                // row does not change its key.
                h.update(&serde_json::to_vec(row).expect("a JSON map serialises"));
            }
            KeySpec::Fields(fields) => {
                for f in fields {
                    let v = row.get(f).ok_or_else(|| f.clone())?;
                    h.update(&serde_json::to_vec(v).expect("a JSON value serialises"));
                    // Separator that compact JSON never contains, so ("a","bc") != ("ab","c").
                    h.update(b"\n");
                }
            }
        }
        Ok(u128::from_le_bytes(
            h.finalize().as_bytes()[..16].try_into().expect("16 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn detects_the_kinds_of_the_loop() {
        let cases = [
            (
                json!({"prompt": "p", "chosen": "c", "rejected": "r"}),
                DatasetKind::Aift,
            ),
            (
                json!({"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": 5, "score_rejected": 2}),
                DatasetKind::Aift,
            ),
            (json!({"instruction": "i", "output": "o"}), DatasetKind::Ift),
            (
                json!({"question": "q", "answer": "a", "rank": 0}),
                DatasetKind::Ift,
            ),
            (
                json!({"prompt": "Review the user's question", "response": "Reasoning. Score: 4"}),
                DatasetKind::Eft,
            ),
            (json!({"prompt": "p"}), DatasetKind::Prompts),
            (
                json!({"prompt": "p", "prompt_id": "x", "source": "gen"}),
                DatasetKind::Prompts,
            ),
            (
                json!({"prompt_id": "x", "prompt": "p", "response": "r", "index": 2}),
                DatasetKind::Responses,
            ),
            (
                json!({"prompt_id": "x", "response": "r", "index": 2, "score": 4.3, "judgement": "… Score: 4"}),
                DatasetKind::Judgements,
            ),
            (
                json!({"id": 1, "name": "n", "instances": []}),
                DatasetKind::Other,
            ),
        ];
        for (row, want) in cases {
            assert_eq!(DatasetKind::detect(&obj(row.clone())), want, "{row}");
        }
    }

    #[test]
    fn natural_keys() {
        let aift = obj(json!({"prompt": "p", "chosen": "c", "rejected": "r"}));
        assert_eq!(
            DatasetKind::Aift.natural_key(&aift),
            KeySpec::Fields(vec!["prompt".into()])
        );
        let ranked = obj(json!({"question": "q", "answer": "a", "rank": 0}));
        assert_eq!(
            DatasetKind::Ift.natural_key(&ranked),
            KeySpec::Fields(vec!["question".into(), "rank".into()])
        );
        let resp = obj(json!({"prompt_id": "x", "prompt": "p", "response": "r", "index": 2}));
        assert_eq!(
            DatasetKind::Responses.natural_key(&resp),
            KeySpec::Fields(vec!["prompt_id".into(), "index".into()])
        );
        assert_eq!(DatasetKind::Other.natural_key(&aift), KeySpec::WholeRow);
    }

    #[test]
    fn key_hash_depends_only_on_key_fields() {
        let k = KeySpec::parse("prompt").unwrap();
        let a = obj(json!({"prompt": "p", "chosen": "c"}));
        let b = obj(json!({"chosen": "other", "prompt": "p"}));
        let c = obj(json!({"prompt": "q", "chosen": "c"}));
        assert_eq!(k.key_hash(&a), k.key_hash(&b));
        assert_ne!(k.key_hash(&a), k.key_hash(&c));
        assert_eq!(
            k.key_hash(&obj(json!({"chosen": "c"}))),
            Err("prompt".to_string())
        );
        // Field boundaries matter.
        let two = KeySpec::parse("a, b").unwrap();
        assert_ne!(
            two.key_hash(&obj(json!({"a": "x", "b": "yz"}))),
            two.key_hash(&obj(json!({"a": "xy", "b": "z"})))
        );
        assert_eq!(KeySpec::parse(" , "), None);
    }

    #[test]
    fn score_line() {
        assert!(has_score_line("good answer.\nScore: 4"));
        assert!(has_score_line("Score:5"));
        assert!(!has_score_line("Score: high"));
        assert!(!has_score_line("no score"));
    }
}
