//! `EvalItem` and `Document`: the one shape every dataset produces and every backend consumes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::scoring::ScorerKind;

/// One retrieved document (becomes one or more precomputed chunks in the engine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Title, when the source has one (HotpotQA paragraphs do).
    pub title: Option<String>,
    /// Body text. For HotpotQA this is `''.join(sentences).strip()`; for generated haystacks
    /// it is an exact slice of the haystack, so concatenating the bodies gives the haystack back.
    pub text: String,
}

impl Document {
    /// A document without a title.
    pub fn untitled(text: impl Into<String>) -> Self {
        Document {
            title: None,
            text: text.into(),
        }
    }

    /// The text the engine should tokenise for this document's chunk.
    ///
    /// Titled: `"{title}: {text}\n"` (the HotpotQA chunk format of REFERENCE-A3.md).
    /// Untitled: `text` unchanged, so generated haystacks concatenate back exactly.
    pub fn chunk_text(&self) -> String {
        match &self.title {
            Some(title) => format!("{title}: {}\n", self.text),
            None => self.text.clone(),
        }
    }
}

/// One evaluation question with its documents and reference answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalItem {
    /// Stable id (HotpotQA `_id`, `needle-len1024-depth033`, `ruler-niah_single-len1024-s0`, ..).
    pub id: String,
    /// Documents in prompt order.
    pub documents: Vec<Document>,
    /// The question, without any chat template (the engine adds that).
    pub question: String,
    /// Reference answers; scorers take the best match (or, for RULER, require all).
    pub answers: Vec<String>,
    /// How outputs for this item are scored.
    pub scorer: ScorerKind,
    /// Free-form facts about the item: needle depth and length, RULER task name, HotpotQA type..
    pub tags: BTreeMap<String, serde_json::Value>,
}

impl EvalItem {
    /// The documents' chunk texts concatenated: the context the model sees between prefix and
    /// question.
    pub fn context_text(&self) -> String {
        self.documents.iter().map(Document::chunk_text).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_text_follows_the_reference_format() {
        let titled = Document {
            title: Some("Ed Wood".into()),
            text: "Edward Davis Wood Jr. was an American filmmaker.".into(),
        };
        assert_eq!(
            titled.chunk_text(),
            "Ed Wood: Edward Davis Wood Jr. was an American filmmaker.\n"
        );
        assert_eq!(Document::untitled(" a b. ").chunk_text(), " a b. ");
    }
}
