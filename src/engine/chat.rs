//! Chat templates. SmolLM2 and srlm's checkpoints use ChatML
//! (`<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n`); the template a model carries
//! (GGUF `tokenizer.chat_template`, or `tokenizer_config.json`) is recognised as ChatML, with
//! the default system message it inserts when the conversation has none (SmolLM2 does).

/// Errors recognising a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("chat template is not ChatML (srlm supports `<|im_start|>role\\n…<|im_end|>` templates): {snippet}")]
    Unsupported { snippet: String },
}

/// Beginning of a turn.
pub const IM_START: &str = "<|im_start|>";
/// End of a turn: generation stops here.
pub const IM_END: &str = "<|im_end|>";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: "assistant".into(),
            content: content.into(),
        }
    }
}

/// A ChatML template, with the system message it adds when the conversation starts without one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatTemplate {
    pub default_system: Option<String>,
}

impl ChatTemplate {
    /// Plain ChatML, no default system message.
    pub fn chatml() -> Self {
        ChatTemplate::default()
    }

    /// Recognise a Jinja chat template as ChatML and find its default system message.
    pub fn from_jinja(template: &str) -> Result<Self, ChatError> {
        // Templates are stored with real newlines (GGUF) or, after a JSON round trip of a
        // Jinja literal, with `\n` escapes: treat both alike.
        let t = template.replace("\\n", "\n");
        if !t.contains(IM_START) || !t.contains(IM_END) {
            let snippet: String = template.chars().take(80).collect();
            return Err(ChatError::Unsupported { snippet });
        }
        let marker = format!("{IM_START}system\n");
        let default_system = if t.contains("!= 'system'") || t.contains("!= \"system\"") {
            t.find(&marker).and_then(|i| {
                let rest = &t[i + marker.len()..];
                rest.find(IM_END).map(|j| rest[..j].to_string())
            })
        } else {
            None
        };
        Ok(ChatTemplate { default_system })
    }

    /// Render a conversation; with `add_generation_prompt`, open the assistant's turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> String {
        let mut s = String::new();
        let has_system = messages.first().is_some_and(|m| m.role == "system");
        if let (false, Some(sys)) = (has_system, &self.default_system) {
            push_turn(&mut s, "system", sys);
        }
        for m in messages {
            push_turn(&mut s, &m.role, &m.content);
        }
        if add_generation_prompt {
            s.push_str(IM_START);
            s.push_str("assistant\n");
        }
        s
    }

    /// The prompt for one user instruction, ready for the assistant's answer.
    pub fn prompt(&self, user: &str) -> String {
        self.render(&[Message::user(user)], true)
    }

    /// The text the model should produce for `response` to end its turn (what SFT and DPO
    /// score after [`ChatTemplate::prompt`]).
    pub fn response_suffix(response: &str) -> String {
        format!("{response}{IM_END}\n")
    }
}

fn push_turn(s: &mut String, role: &str, content: &str) {
    s.push_str(IM_START);
    s.push_str(role);
    s.push('\n');
    s.push_str(content);
    s.push_str(IM_END);
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_adds_its_system_message() {
        let t = ChatTemplate::from_jinja(SMOLLM2).unwrap();
        assert_eq!(
            t.prompt("Hi"),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let own = [
            Message { role: "system".into(), content: "Be brief.".into() },
            Message::user("Hi"),
        ];
        assert_eq!(
            t.render(&own, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn plain_chatml_and_escaped_newlines() {
        let t = ChatTemplate::from_jinja(crate::engine::fixture::TINY_CHAT_TEMPLATE).unwrap();
        assert_eq!(t, ChatTemplate::chatml());
        assert_eq!(t.prompt("Hi"), "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let escaped = SMOLLM2.replace('\n', "\\n");
        assert_eq!(
            ChatTemplate::from_jinja(&escaped).unwrap(),
            ChatTemplate::from_jinja(SMOLLM2).unwrap()
        );
    }

    #[test]
    fn other_templates_are_refused() {
        let err = ChatTemplate::from_jinja("[INST] {{ message['content'] }} [/INST]").unwrap_err();
        assert!(err.to_string().contains("not ChatML"));
    }
}
