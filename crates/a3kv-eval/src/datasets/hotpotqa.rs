//! HotpotQA dev (distractor setting): each titled paragraph of an item's `context` becomes one
//! document, in file order, exactly as REFERENCE-A3.md turns items into chunks.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use crate::error::EvalError;
use crate::item::{Document, EvalItem};
use crate::scoring::ScorerKind;

/// File name of the dev set inside the data folder.
pub const HOTPOTQA_FILE: &str = "hotpotqa.json";

/// One record of `hotpot_dev_distractor_v1.json`.
#[derive(Debug, Deserialize)]
struct RawItem {
    #[serde(rename = "_id")]
    id: String,
    question: String,
    answer: String,
    /// `[[title, [sentence, ..]], ..]`.
    context: Vec<(String, Vec<String>)>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    level: Option<String>,
    /// `[[title, sentence index], ..]`.
    #[serde(default)]
    supporting_facts: Vec<(String, u64)>,
}

/// Reads `data_dir/hotpotqa.json` and returns its first `limit` items (all when `None`).
///
/// Errors: `DataMissing` when the file is absent, `Json` when it does not have HotpotQA's shape.
pub fn load(data_dir: &Path, limit: Option<usize>) -> Result<Vec<EvalItem>, EvalError> {
    let path = data_dir.join(HOTPOTQA_FILE);
    let raw = std::fs::read(&path).map_err(|e| EvalError::from_data_io(&path, e))?;
    parse(&raw, limit).map_err(|source| EvalError::Json { path, source })
}

/// Parses HotpotQA JSON (an array of items) and converts the first `limit` items.
pub fn parse(json: &[u8], limit: Option<usize>) -> Result<Vec<EvalItem>, serde_json::Error> {
    let raw: Vec<RawItem> = serde_json::from_slice(json)?;
    Ok(raw
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(convert)
        .collect())
}

fn convert(raw: RawItem) -> EvalItem {
    let documents = raw
        .context
        .into_iter()
        .map(|(title, sentences)| Document {
            text: sentences.concat().trim().to_string(),
            title: Some(title),
        })
        .collect();
    let mut tags = BTreeMap::new();
    tags.insert("task".into(), json!("hotpotqa"));
    if let Some(kind) = raw.kind {
        tags.insert("type".into(), json!(kind));
    }
    if let Some(level) = raw.level {
        tags.insert("level".into(), json!(level));
    }
    let supporting: Vec<&str> = raw
        .supporting_facts
        .iter()
        .map(|(title, _)| title.as_str())
        .collect();
    tags.insert("supporting_titles".into(), json!(supporting));
    EvalItem {
        id: raw.id,
        documents,
        question: raw.question,
        answers: vec![raw.answer],
        scorer: ScorerKind::Qa,
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two records shaped like the real file (first one abridged from item 0).
    const SAMPLE: &str = r#"[
      {"_id": "5a8b57f25542995d1e6f1371", "answer": "yes",
       "question": "Were Scott Derrickson and Ed Wood of the same nationality?",
       "supporting_facts": [["Scott Derrickson", 0], ["Ed Wood", 0]],
       "context": [
         ["Ed Wood (film)", ["Ed Wood is a 1994 American film.", " The film concerns Wood."]],
         ["Scott Derrickson", ["Scott Derrickson (born July 16, 1966) is an American director.", " He lives in Los Angeles, California. "]]
       ],
       "type": "comparison", "level": "hard"},
      {"_id": "second", "answer": "Chief of Protocol", "question": "What job?",
       "supporting_facts": [], "context": [["T", ["x"]]], "type": "bridge", "level": "hard"}
    ]"#;

    #[test]
    fn paragraphs_become_titled_documents() {
        let items = parse(SAMPLE.as_bytes(), None).unwrap();
        assert_eq!(items.len(), 2);
        let item = &items[0];
        assert_eq!(item.id, "5a8b57f25542995d1e6f1371");
        assert_eq!(item.answers, vec!["yes"]);
        assert_eq!(item.scorer, ScorerKind::Qa);
        assert_eq!(item.documents.len(), 2);
        assert_eq!(
            item.documents[0].chunk_text(),
            "Ed Wood (film): Ed Wood is a 1994 American film. The film concerns Wood.\n"
        );
        // ''.join(sentences).strip(): the trailing space of the last sentence goes.
        assert_eq!(
            item.documents[1].chunk_text(),
            "Scott Derrickson: Scott Derrickson (born July 16, 1966) is an American director. \
             He lives in Los Angeles, California.\n"
        );
        assert_eq!(item.tags["type"], "comparison");
        assert_eq!(
            item.tags["supporting_titles"],
            json!(["Scott Derrickson", "Ed Wood"])
        );
        assert_eq!(parse(SAMPLE.as_bytes(), Some(1)).unwrap().len(), 1);
    }

    #[test]
    fn wrong_shape_is_a_json_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(HOTPOTQA_FILE), r#"[{"_id": "x"}]"#).unwrap();
        let err = load(dir.path(), None).unwrap_err();
        assert_eq!(err.kind(), "json");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(load(empty.path(), None).unwrap_err().kind(), "data_missing");
    }

    /// The real file, when `scripts/fetch-data.sh` has fetched it (required under CI).
    #[test]
    fn real_file_when_fetched() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
        if !dir.join(HOTPOTQA_FILE).exists() && std::env::var_os("CI").is_none() {
            eprintln!("skipping: data/{HOTPOTQA_FILE} absent (run scripts/fetch-data.sh)");
            return;
        }
        let items = load(&dir, None).unwrap();
        assert_eq!(items.len(), 7405);
        let first = &items[0];
        assert_eq!(first.id, "5a8b57f25542995d1e6f1371");
        assert_eq!(first.answers, vec!["yes"]);
        assert_eq!(first.documents.len(), 10);
        assert!(first.documents[4]
            .chunk_text()
            .starts_with("Ed Wood: Edward Davis Wood Jr."));
        let docs: usize = items.iter().map(|i| i.documents.len()).sum();
        assert!(docs > 7405 * 9, "{docs} documents");
        // REFERENCE-A3.md: item 27 has 2 paragraphs.
        assert_eq!(items[27].documents.len(), 2);
    }
}
