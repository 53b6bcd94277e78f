//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template`, a folder's
//! `chat_template.jinja` or `tokenizer_config.json`), rendered with minijinja the way
//! transformers renders it (`trim_blocks`, `lstrip_blocks`, Python string methods from
//! minijinja-contrib's pycompat, `raise_exception`), with the tokenizer's `bos_token` and
//! `eos_token`. The end of an assistant turn (what SFT and DPO score after the response, and
//! where generation stops) is read off the template's own rendering of a reply.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::{context, Environment, ErrorKind};

/// Errors reading, compiling or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat template{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template {
        line: Option<usize>,
        message: String,
    },
    #[error("chat template: {0}")]
    Shape(String),
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
}

/// ChatML without a default system message: srlm's fallback for a model without a template.
pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Message::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new("assistant", content)
    }
    pub fn system(content: impl Into<String>) -> Self {
        Message::new("system", content)
    }
}

/// A compiled chat template with the special tokens it is rendered with.
#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    env: Arc<Environment<'static>>,
    /// What the template writes after an assistant reply (e.g. `<|im_end|>\n`).
    end_of_turn: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("end_of_turn", &self.end_of_turn)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ChatTemplate {
    fn eq(&self, o: &Self) -> bool {
        (&self.source, &self.bos_token, &self.eos_token) == (&o.source, &o.bos_token, &o.eos_token)
    }
}

fn template_error(e: minijinja::Error) -> ChatError {
    let mut message = e.to_string();
    // minijinja's Display already says where; keep the chain of causes too.
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        message.push_str(&format!(": {s}"));
        src = s.source();
    }
    ChatError::Template {
        line: e.line(),
        message,
    }
}

/// A reply no template alters, to find where a turn ends.
const PROBE: &str = "srlm-probe-reply";

impl ChatTemplate {
    /// Compile `source` and check that it renders a user turn, a generation prompt and a
    /// reply after it (the shape SFT, DPO and generation rely on).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat_template", source.to_owned())
            .map_err(template_error)?;
        let mut t = ChatTemplate {
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            env: Arc::new(env),
            end_of_turn: String::new(),
        };
        let user = [Message::user("Hi")];
        let prompt = t.render(&user, true)?;
        let full = t.render(&[Message::user("Hi"), Message::assistant(PROBE)], false)?;
        let tail = full
            .strip_prefix(prompt.as_str())
            .and_then(|rest| rest.split_once(PROBE))
            .map(|(_, tail)| tail.to_owned())
            .ok_or_else(|| {
                ChatError::Shape(
                    "a conversation with a reply does not start with the generation prompt".into(),
                )
            })?;
        t.end_of_turn = tail;
        Ok(t)
    }

    /// Plain ChatML (srlm's fallback), with SmolLM2's special tokens.
    pub fn chatml() -> Self {
        Self::new(CHATML, "<|im_start|>", "<|im_end|>").expect("ChatML compiles")
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Render a conversation; with `add_generation_prompt`, open the assistant's turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let tmpl = self
            .env
            .get_template("chat_template")
            .map_err(template_error)?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(template_error)
    }

    /// The prompt for one user instruction, ready for the assistant's answer.
    pub fn prompt(&self, user: &str) -> Result<String, ChatError> {
        self.render(&[Message::user(user)], true)
    }

    /// The text the model produces for `response` to `user`, up to the end of its turn: the
    /// rendering of the conversation with the reply, less [`ChatTemplate::prompt`] (what SFT
    /// and DPO score).
    pub fn response_text(&self, user: &str, response: &str) -> Result<String, ChatError> {
        let prompt = self.prompt(user)?;
        let full = self.render(&[Message::user(user), Message::assistant(response)], false)?;
        full.strip_prefix(prompt.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                ChatError::Shape(
                    "the conversation with the reply does not start with the prompt".into(),
                )
            })
    }

    /// What the template writes after a reply (e.g. `<|im_end|>\n`, `<|eot_id|>`).
    pub fn end_of_turn(&self) -> &str {
        &self.end_of_turn
    }

    /// The end-of-turn marker without surrounding whitespace: the token generation stops at.
    pub fn end_marker(&self) -> &str {
        self.end_of_turn.trim()
    }
}

/// A special token as `tokenizer_config.json` writes it: a string or an `AddedToken` object.
pub fn token_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// A folder's template text: `chat_template.jinja` (what current transformers writes), else
/// `tokenizer_config.json`'s `chat_template` (a string, or a list of named templates, of
/// which `default` is used). Returns the template and the file it came from.
pub fn folder_template(dir: &Path) -> Result<Option<(String, PathBuf)>, ChatError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| ChatError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })
    };
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return Ok(Some((read(&jinja)?, jinja)));
    }
    let tc = dir.join("tokenizer_config.json");
    if !tc.is_file() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(&read(&tc)?).map_err(|e| ChatError::Read {
        path: tc.clone(),
        message: format!("line {} column {}: {e}", e.line(), e.column()),
    })?;
    let t = match &v["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str().map(str::to_owned)),
        _ => None,
    };
    Ok(t.map(|t| (t, tc)))
}

/// `bos_token` and `eos_token` of a folder's `tokenizer_config.json`, where present.
pub fn folder_special_tokens(dir: &Path) -> (Option<String>, Option<String>) {
    let v: serde_json::Value = std::fs::read(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    (token_text(&v["bos_token"]), token_text(&v["eos_token"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn smollm2() -> ChatTemplate {
        ChatTemplate::new(SMOLLM2, "<|im_start|>", "<|im_end|>").unwrap()
    }

    #[test]
    fn smollm2_template_adds_its_system_message() {
        let t = smollm2();
        assert_eq!(
            t.prompt("Hi").unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let own = [Message::system("Be brief."), Message::user("Hi")];
        assert_eq!(
            t.render(&own, false).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
        assert_eq!(t.end_of_turn(), "<|im_end|>\n");
        assert_eq!(t.end_marker(), "<|im_end|>");
        assert_eq!(t.response_text("Hi", "4.").unwrap(), "4.<|im_end|>\n");
    }

    #[test]
    fn plain_chatml_fallback() {
        let t = ChatTemplate::chatml();
        assert_eq!(
            t.prompt("Hi").unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t,
            ChatTemplate::new(CHATML, "<|im_start|>", "<|im_end|>").unwrap()
        );
    }

    #[test]
    fn python_string_methods_and_bos() {
        let src = "{{ bos_token }}{% for m in messages %}[{{ m['role'].upper() }}] {{ m['content'].strip() }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[ASSISTANT] {% endif %}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert_eq!(t.prompt("  Hi ").unwrap(), "<s>[USER] Hi</s>[ASSISTANT] ");
        assert_eq!(t.end_marker(), "</s>");
    }

    #[test]
    fn template_errors_name_the_line() {
        let err = ChatTemplate::new("{% for m in messages %}\n{{ m.content }\n", "", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let raising = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}";
        let t = ChatTemplate::new(raising, "", "").unwrap();
        let err = t
            .render(&[Message::system("x"), Message::user("y")], true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("System role not supported"), "{err}");
        // A template whose reply does not follow its generation prompt is refused.
        let odd = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<gen>{% endif %}";
        let err = ChatTemplate::new(odd, "", "").unwrap_err().to_string();
        assert!(err.contains("generation prompt"), "{err}");
    }

    #[derive(serde::Deserialize)]
    struct Fixture {
        templates: std::collections::BTreeMap<String, Source>,
        conversations: std::collections::BTreeMap<String, Vec<Turn>>,
        cases: Vec<Case>,
    }
    #[derive(serde::Deserialize)]
    struct Source {
        source: String,
        bos_token: String,
        eos_token: String,
    }
    #[derive(serde::Deserialize)]
    struct Turn {
        role: String,
        content: String,
    }
    #[derive(serde::Deserialize)]
    struct Case {
        template: String,
        conversation: String,
        add_generation_prompt: bool,
        expected: Option<String>,
        error: Option<String>,
    }

    /// Every template's rendering of every conversation equals transformers' (or fails with
    /// the template's own message where transformers' did), from the committed fixture.
    #[test]
    fn renderings_match_transformers() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/chat_templates.json"
        );
        let f: Fixture = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        for name in ["smollm2", "llama3", "qwen2.5", "mistral", "gemma"] {
            assert!(f.templates.contains_key(name), "fixture lacks {name}");
        }
        let templates: std::collections::BTreeMap<&str, ChatTemplate> = f
            .templates
            .iter()
            .map(|(k, s)| {
                let t = ChatTemplate::new(&s.source, &s.bos_token, &s.eos_token);
                (k.as_str(), t.unwrap_or_else(|e| panic!("{k}: {e}")))
            })
            .collect();
        for c in &f.cases {
            let msgs: Vec<Message> = f.conversations[&c.conversation]
                .iter()
                .map(|t| Message::new(&t.role, &t.content))
                .collect();
            let got = templates[c.template.as_str()].render(&msgs, c.add_generation_prompt);
            let what = format!(
                "{} {} gen={}",
                c.template, c.conversation, c.add_generation_prompt
            );
            match (&c.expected, &c.error, got) {
                (Some(want), _, Ok(got)) => assert_eq!(&got, want, "{what}"),
                (_, Some(want), Err(e)) => {
                    assert!(e.to_string().contains(want.as_str()), "{what}: {e}")
                }
                (_, _, got) => panic!("{what}: got {got:?}"),
            }
        }
        let markers: Vec<(&str, &str)> = templates
            .iter()
            .map(|(k, t)| (*k, t.end_marker()))
            .collect();
        assert_eq!(
            markers,
            [
                ("gemma", "<end_of_turn>"),
                ("llama3", "<|eot_id|>"),
                ("mistral", "</s>"),
                ("qwen2.5", "<|im_end|>"),
                ("smollm2", "<|im_end|>")
            ]
        );
        assert_eq!(
            templates["llama3"].response_text("Hi", "Hello.").unwrap(),
            "Hello.<|eot_id|>"
        );
    }
}
