//! Chat templates (ChatML, Llama-3, Mistral `[INST]`) and the RAG prompt pieces.
//!
//! A RAG prompt is `prefix | chunk 1 | … | chunk n | suffix`; the prefix (system prompt +
//! user turn opening + instruction) and the suffix (question + assistant turn opening) come
//! from the template so each chunk's text can be tokenised and cached on its own.

use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text content.
    pub content: String,
}

/// The chat formats a3kv knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChatTemplate {
    /// `<|im_start|>role\n…<|im_end|>\n` (SmolLM2, Qwen2). `default_system` is inserted
    /// when the conversation has no system message.
    ChatMl { default_system: Option<String> },
    /// Llama-3 header format.
    Llama3,
    /// Mistral `[INST] … [/INST]`.
    Mistral,
}

const SMOLLM_SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
const QWEN_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

impl ChatTemplate {
    /// Picks the template from a Jinja chat template string (GGUF `tokenizer.chat_template`
    /// or `tokenizer_config.json`), falling back on the architecture family.
    pub fn detect(jinja: Option<&str>, family: crate::Family) -> Self {
        let j = jinja.unwrap_or("");
        if j.contains("<|start_header_id|>") {
            ChatTemplate::Llama3
        } else if j.contains("[INST]") {
            ChatTemplate::Mistral
        } else if j.contains("<|im_start|>") {
            let default_system = if j.contains("SmolLM") {
                Some(SMOLLM_SYSTEM.to_string())
            } else if j.contains("Qwen") {
                Some(QWEN_SYSTEM.to_string())
            } else {
                None
            };
            ChatTemplate::ChatMl { default_system }
        } else {
            match family {
                crate::Family::Qwen2 => ChatTemplate::ChatMl {
                    default_system: Some(QWEN_SYSTEM.to_string()),
                },
                crate::Family::Mistral => ChatTemplate::Mistral,
                crate::Family::Llama => ChatTemplate::ChatMl {
                    default_system: None,
                },
            }
        }
    }

    fn system_text<'a>(&'a self, system: Option<&'a str>) -> Option<&'a str> {
        match (system, self) {
            (Some(s), _) => Some(s),
            (None, ChatTemplate::ChatMl { default_system }) => default_system.as_deref(),
            _ => None,
        }
    }

    /// Renders a conversation; with `add_generation_prompt` the assistant turn is opened.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> String {
        let mut out = String::new();
        match self {
            ChatTemplate::ChatMl { .. } => {
                if messages.first().map(|m| m.role.as_str()) != Some("system") {
                    if let Some(s) = self.system_text(None) {
                        out.push_str(&format!("<|im_start|>system\n{s}<|im_end|>\n"));
                    }
                }
                for m in messages {
                    out.push_str(&format!(
                        "<|im_start|>{}\n{}<|im_end|>\n",
                        m.role, m.content
                    ));
                }
                if add_generation_prompt {
                    out.push_str("<|im_start|>assistant\n");
                }
            }
            ChatTemplate::Llama3 => {
                out.push_str("<|begin_of_text|>");
                for m in messages {
                    out.push_str(&format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role,
                        m.content.trim()
                    ));
                }
                if add_generation_prompt {
                    out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
                }
            }
            ChatTemplate::Mistral => {
                out.push_str("<s>");
                let mut pending_system = String::new();
                for m in messages {
                    match m.role.as_str() {
                        "system" => pending_system = format!("{}\n\n", m.content),
                        "user" => {
                            out.push_str(&format!("[INST] {pending_system}{} [/INST]", m.content));
                            pending_system.clear();
                        }
                        _ => out.push_str(&format!("{}</s>", m.content)),
                    }
                }
            }
        }
        out
    }

    /// The text before the documents: system prompt, user turn opening, instruction.
    pub fn rag_prefix(&self, system: Option<&str>, instruction: &str) -> String {
        let sys = self.system_text(system);
        match self {
            ChatTemplate::ChatMl { .. } => {
                let s = sys
                    .map(|s| format!("<|im_start|>system\n{s}<|im_end|>\n"))
                    .unwrap_or_default();
                format!("{s}<|im_start|>user\n{instruction}\n\n")
            }
            ChatTemplate::Llama3 => {
                let s = sys
                    .map(|s| format!("<|start_header_id|>system<|end_header_id|>\n\n{s}<|eot_id|>"))
                    .unwrap_or_default();
                format!("<|begin_of_text|>{s}<|start_header_id|>user<|end_header_id|>\n\n{instruction}\n\n")
            }
            ChatTemplate::Mistral => {
                let s = sys.map(|s| format!("{s}\n\n")).unwrap_or_default();
                format!("<s>[INST] {s}{instruction}\n\n")
            }
        }
    }

    /// The text after the documents: the question and the assistant turn opening.
    pub fn rag_suffix(&self, question: &str) -> String {
        match self {
            ChatTemplate::ChatMl { .. } => {
                format!("\nQuestion: {question}\nAnswer:<|im_end|>\n<|im_start|>assistant\n")
            }
            ChatTemplate::Llama3 => format!(
                "\nQuestion: {question}\nAnswer:<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
            ChatTemplate::Mistral => format!("\nQuestion: {question}\nAnswer: [/INST]"),
        }
    }
}

/// The default RAG instruction (as in the A^3 reference run).
pub const DEFAULT_RAG_INSTRUCTION: &str =
    "Answer the question based on the given passages. Only give me the answer and do not output any other words.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_smollm_prefix_matches_reference_text() {
        let t = ChatTemplate::ChatMl {
            default_system: Some(SMOLLM_SYSTEM.into()),
        };
        assert_eq!(
            t.rag_prefix(None, DEFAULT_RAG_INSTRUCTION),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\n"
        );
        let msgs = [ChatMessage {
            role: "user".into(),
            content: "Hi".into(),
        }];
        assert_eq!(
            t.render(&msgs, true),
            format!("<|im_start|>system\n{SMOLLM_SYSTEM}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        );
    }

    #[test]
    fn detect_picks_formats() {
        use crate::Family;
        assert_eq!(
            ChatTemplate::detect(Some("{{'<|start_header_id|>'}}"), Family::Llama),
            ChatTemplate::Llama3
        );
        assert_eq!(
            ChatTemplate::detect(Some("[INST]"), Family::Llama),
            ChatTemplate::Mistral
        );
        assert!(matches!(
            ChatTemplate::detect(None, Family::Qwen2),
            ChatTemplate::ChatMl { .. }
        ));
    }
}
