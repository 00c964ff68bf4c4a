//! User data as JSONL: one `{"documents": [..], "question": .., "answers": [..]}` per line.
//!
//! A document is a string or `{"title"?: .., "text": ..}`. Optional fields: `id` (default
//! `jsonl-{line}`), `scorer` (`qa` default, `needle`, `match_all`) and `tags` (an object).
//! Blank lines are skipped; line numbers in errors are 1-based.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::EvalError;
use crate::item::{Document, EvalItem};
use crate::scoring::ScorerKind;

#[derive(Deserialize)]
#[serde(untagged)]
enum RawDocument {
    Text(String),
    Titled { title: Option<String>, text: String },
}

/// Unknown fields are ignored, so a record with `answer` but no `answers` gets the clear
/// `MissingAnswers` error rather than a parse error.
#[derive(Deserialize)]
struct RawRecord {
    id: Option<String>,
    documents: Vec<RawDocument>,
    question: String,
    answers: Option<Vec<String>>,
    scorer: Option<ScorerKind>,
    #[serde(default)]
    tags: BTreeMap<String, serde_json::Value>,
}

/// Reads the JSONL file at `path`, returning at most `limit` items.
///
/// Errors: `Io` when the file cannot be read, `JsonlLine` (with the line number)
/// for a line that is not a valid record, `MissingAnswers` for a record without `answers`.
pub fn load(path: &Path, limit: Option<usize>) -> Result<Vec<EvalItem>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path, limit)
}

/// Parses JSONL `text`; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path, limit: Option<usize>) -> Result<Vec<EvalItem>, EvalError> {
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if items.len() >= limit.unwrap_or(usize::MAX) {
            break;
        }
        if line.trim().is_empty() {
            continue;
        }
        let line_no = index + 1;
        let raw: RawRecord = serde_json::from_str(line).map_err(|e| EvalError::JsonlLine {
            path: path.to_path_buf(),
            line: line_no,
            message: e.to_string(),
        })?;
        let answers = raw.answers.ok_or_else(|| EvalError::MissingAnswers {
            path: path.to_path_buf(),
            line: line_no,
        })?;
        let documents = raw
            .documents
            .into_iter()
            .map(|d| match d {
                RawDocument::Text(text) => Document::untitled(text),
                RawDocument::Titled { title, text } => Document { title, text },
            })
            .collect();
        items.push(EvalItem {
            id: raw.id.unwrap_or_else(|| format!("jsonl-{line_no}")),
            documents,
            question: raw.question,
            answers,
            scorer: raw.scorer.unwrap_or(ScorerKind::Qa),
            tags: raw.tags,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("in.jsonl")
    }

    #[test]
    fn reads_strings_and_titled_documents() {
        let text = concat!(
            r#"{"documents": ["plain", {"title": "T", "text": "body"}, {"text": "no title"}], "question": "q?", "answers": ["a", "b"]}"#,
            "\n\n",
            r#"{"id": "mine", "documents": [], "question": "q2", "answers": [], "scorer": "match_all", "tags": {"k": 1}}"#,
            "\n"
        );
        let items = parse(text, p(), None).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id, "jsonl-1");
        assert_eq!(items[0].documents[0], Document::untitled("plain"));
        assert_eq!(items[0].documents[1].chunk_text(), "T: body\n");
        assert_eq!(items[0].documents[2].title, None);
        assert_eq!(items[0].answers, vec!["a", "b"]);
        assert_eq!(items[0].scorer, ScorerKind::Qa);
        assert_eq!(items[1].id, "mine");
        assert_eq!(items[1].scorer, ScorerKind::MatchAll);
        assert_eq!(items[1].tags["k"], 1);
        assert_eq!(parse(text, p(), Some(1)).unwrap().len(), 1);
    }

    #[test]
    fn malformed_line_is_named() {
        let text = concat!(
            r#"{"documents": [], "question": "q", "answers": ["a"]}"#,
            "\n",
            r#"{"documents": [], "question": "q", "answers": ["a"]}"#,
            "\n",
            "{not json\n"
        );
        let err = parse(text, p(), None).unwrap_err();
        match &err {
            EvalError::JsonlLine { line, .. } => assert_eq!(*line, 3),
            other => panic!("wrong error {other:?}"),
        }
        assert!(err.to_string().starts_with("in.jsonl:3:"), "{err}");
        // A wrong type is malformed too.
        let err = parse(
            r#"{"documents": "x", "question": "q", "answers": []}"#,
            p(),
            None,
        )
        .unwrap_err();
        assert_eq!(err.kind(), "jsonl_line");
    }

    #[test]
    fn missing_answers_is_a_clear_error() {
        let text = concat!(
            r#"{"documents": ["d"], "question": "q", "answers": ["a"]}"#,
            "\n",
            r#"{"documents": ["d"], "question": "q", "answer": "a"}"#
        );
        let err = parse(text, p(), None).unwrap_err();
        assert!(
            matches!(err, EvalError::MissingAnswers { line: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"answers\""), "{err}");
    }

    #[test]
    fn missing_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("nope.jsonl"), None).unwrap_err();
        assert_eq!(err.kind(), "io");
        assert!(err.to_string().contains("nope.jsonl"), "{err}");
    }
}
