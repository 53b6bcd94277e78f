//! Reading OpenAssistant files for `import oasst2`: the official message-tree export or its
//! flattened forms, detected from the first row, into threads (a first-turn prompt and its
//! human-ranked answers).
use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::import::{Answer, ImportError, Thread};

/// Which kind of source a file is, from the fields of its first row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    MessageTree,
    RankedFirstTurns,
    ScoredResponses,
}

fn detect(path: &Path, first: &Value) -> Result<SourceFormat, ImportError> {
    let has = |k: &str| first.get(k).is_some();
    if has("message_id") && has("role") && has("text") {
        Ok(SourceFormat::MessageTree)
    } else if has("question") && has("answer") && has("rank") {
        Ok(SourceFormat::RankedFirstTurns)
    } else if has("prompt_text") && has("response_text") {
        Ok(SourceFormat::ScoredResponses)
    } else {
        let fields = first
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "not an object".into());
        Err(ImportError::Format {
            path: path.to_path_buf(),
            fields,
        })
    }
}

fn read_rows(path: &Path) -> Result<Vec<(usize, Value)>, ImportError> {
    super::jsonl::read_numbered(path).map_err(|e| match e {
        super::jsonl::JsonlError::Io { path, source } => ImportError::Io { path, source },
        super::jsonl::JsonlError::Row { path, line, msg } => ImportError::Row {
            path,
            line,
            msg: format!("not JSON: {msg}"),
        },
    })
}

/// A rank written as `2` or `2.0` (the flattened OASST2 exports use floats).
fn whole_number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}

fn field_str(path: &Path, line: usize, v: &Value, k: &str) -> Result<String, ImportError> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ImportError::Row {
            path: path.to_path_buf(),
            line,
            msg: format!("field `{k}` missing or not a string"),
        })
}

/// Reads one source file into threads (in first-appearance order), detecting its format.
pub fn read_threads(path: &Path, lang: &str) -> Result<(SourceFormat, Vec<Thread>), ImportError> {
    let rows = read_rows(path)?;
    let Some((_, first)) = rows.first() else {
        return Ok((SourceFormat::ScoredResponses, Vec::new()));
    };
    let fmt = detect(path, first)?;
    let mut order: Vec<String> = Vec::new();
    let mut threads: BTreeMap<String, Thread> = BTreeMap::new();
    let mut push = |id: String, prompt: String, answer: Option<Answer>| {
        let t = threads.entry(id.clone()).or_insert_with(|| {
            order.push(id.clone());
            Thread {
                prompt_id: id,
                prompt,
                answers: Vec::new(),
            }
        });
        if let Some(a) = answer {
            t.answers.push(a);
        }
    };
    match fmt {
        SourceFormat::RankedFirstTurns => {
            for (line, v) in &rows {
                let q = field_str(path, *line, v, "question")?;
                let a = field_str(path, *line, v, "answer")?;
                let rank =
                    v.get("rank")
                        .and_then(whole_number)
                        .ok_or_else(|| ImportError::Row {
                            path: path.to_path_buf(),
                            line: *line,
                            msg: "field `rank` missing or not a whole number".into(),
                        })?;
                let id = format!("q-{}", &blake3::hash(q.as_bytes()).to_hex()[..16]);
                let ans = Answer {
                    id: format!("{id}-r{rank}"),
                    text: a,
                    rank: Some(rank as u32),
                    quality: None,
                };
                push(id, q, Some(ans));
            }
        }
        SourceFormat::ScoredResponses => {
            for (line, v) in &rows {
                if let Some(l) = v.get("language").and_then(Value::as_str) {
                    if !lang.is_empty() && l != lang {
                        continue;
                    }
                }
                let id = field_str(path, *line, v, "prompt_id")?;
                let q = field_str(path, *line, v, "prompt_text")?;
                let ans = Answer {
                    id: field_str(path, *line, v, "response_id")?,
                    text: field_str(path, *line, v, "response_text")?,
                    rank: None,
                    quality: v.get("quality_score").and_then(Value::as_f64),
                };
                push(id, q, Some(ans));
            }
        }
        SourceFormat::MessageTree => {
            // First turns: prompter messages without a parent; answers: their assistant children.
            let mut firsts = BTreeMap::new();
            for (line, v) in &rows {
                let role = field_str(path, *line, v, "role")?;
                let parent = v.get("parent_id").and_then(Value::as_str);
                let lang_ok =
                    lang.is_empty() || v.get("lang").and_then(Value::as_str) == Some(lang);
                if role == "prompter" && parent.is_none() && lang_ok {
                    let id = field_str(path, *line, v, "message_id")?;
                    let text = field_str(path, *line, v, "text")?;
                    firsts.insert(id.clone(), ());
                    push(id, text, None);
                }
            }
            for (line, v) in &rows {
                let role = field_str(path, *line, v, "role")?;
                let Some(parent) = v.get("parent_id").and_then(Value::as_str) else {
                    continue;
                };
                if role != "assistant" || !firsts.contains_key(parent) {
                    continue;
                }
                if v.get("deleted").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let quality = v.get("labels").and_then(|l| {
                    let names = l.get("name")?.as_array()?;
                    let values = l.get("value")?.as_array()?;
                    let i = names.iter().position(|n| n.as_str() == Some("quality"))?;
                    values.get(i)?.as_f64()
                });
                let ans = Answer {
                    id: field_str(path, *line, v, "message_id")?,
                    text: field_str(path, *line, v, "text")?,
                    rank: v.get("rank").and_then(whole_number).map(|r| r as u32),
                    quality,
                };
                if let Some(t) = threads.get_mut(parent) {
                    t.answers.push(ans);
                }
            }
        }
    }
    let out = order
        .into_iter()
        .filter_map(|id| threads.remove(&id))
        .collect();
    Ok((fmt, out))
}
