//! The OpenAI-compatible API's JSON, as far as srlm uses it: chat completions (with log-probs
//! for the digit judge), the model list and usage counts. Fields servers disagree on are
//! optional, so a reply from vLLM, TGI, SGLang, Ollama or llama.cpp parses alike.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize)]
pub struct Message<'a> {
    pub role: &'a str,
    pub content: &'a str,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<Message<'a>>,
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// Not in OpenAI's API; vLLM, SGLang and llama.cpp accept it. Sent only when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    pub max_tokens: usize,
    pub seed: u64,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: Option<u32>,
    pub message: ReplyMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReplyMessage {
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChoiceLogprobs {
    #[serde(default)]
    pub content: Option<Vec<TokenLogprob>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelList {
    #[serde(default)]
    pub data: Vec<ModelInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    /// Whatever else the server says of the model (owner, creation time, llama.cpp's `meta`).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// An error body (`{"error": {"message": …}}` or `{"error": "…"}` or `{"detail": …}`).
pub fn error_message(body: &str) -> String {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return truncate(body.trim(), 400),
    };
    let m = v
        .pointer("/error/message")
        .or_else(|| v.get("error"))
        .or_else(|| v.get("detail"))
        .or_else(|| v.get("message"))
        .unwrap_or(&v);
    truncate(
        &match m {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        400,
    )
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_every_shape_give_their_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"model not found","type":"x"}}"#),
            "model not found"
        );
        assert_eq!(error_message(r#"{"error":"bad n"}"#), "bad n");
        assert_eq!(error_message(r#"{"detail":"nope"}"#), "nope");
        assert_eq!(error_message("plain text\n"), "plain text");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }

    #[test]
    fn a_minimal_reply_parses_and_extra_fields_are_ignored() {
        let c: ChatCompletion = serde_json::from_str(
            r#"{"choices":[{"message":{"role":"assistant","content":"hi"},"x":1}],"y":2}"#,
        )
        .unwrap();
        assert_eq!(c.choices[0].message.content.as_deref(), Some("hi"));
        assert!(c.usage.is_none());
        let m: ModelList =
            serde_json::from_str(r#"{"object":"list","data":[{"id":"a","owned_by":"me"}]}"#)
                .unwrap();
        assert_eq!(m.data[0].id, "a");
        assert_eq!(m.data[0].rest["owned_by"], "me");
    }
}
