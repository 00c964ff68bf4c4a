//! Needle in a haystack: Paul Graham essays as filler, one needle sentence inserted at a
//! sentence boundary at each requested depth, for each requested context length (in the
//! model's tokens), as in the NIAH test the paper's heat map comes from.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use super::text::{pack_documents, split_sentences, CountTokens};
use crate::error::EvalError;
use crate::item::EvalItem;
use crate::scoring::ScorerKind;

/// File name of the essays (`{"text": "..."}`) inside the data folder.
pub const ESSAYS_FILE: &str = "PaulGrahamEssays.json";

/// What to generate. Items come out length-major, depth-minor.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedleConfig {
    /// Context lengths in model tokens (documents only, needle included, question excluded).
    pub lengths_tokens: Vec<usize>,
    /// Needle depths in percent of the haystack, 0 = first sentence, 100 = after the last.
    pub depth_percents: Vec<f64>,
    /// The sentence hidden in the haystack.
    pub needle: String,
    /// The question asking for it.
    pub question: String,
    /// The reference answer.
    pub answer: String,
    /// Upper bound of a document's length in tokens (documents are cut at sentence boundaries).
    pub doc_tokens: usize,
}

impl Default for NeedleConfig {
    fn default() -> Self {
        NeedleConfig {
            lengths_tokens: vec![512, 1024, 2048, 3072, 4096, 6144, 8000],
            depth_percents: (0..10).map(|i| f64::from(i) * 100.0 / 9.0).collect(),
            needle: "The best thing to do in San Francisco is eat a sandwich and sit in \
                     Dolores Park on a sunny day."
                .into(),
            question: "What is the best thing to do in San Francisco?".into(),
            answer: "eat a sandwich and sit in Dolores Park on a sunny day".into(),
            doc_tokens: 512,
        }
    }
}

#[derive(Deserialize)]
struct EssaysFile {
    text: String,
}

/// Reads `data_dir/PaulGrahamEssays.json` and generates the items of `cfg`.
///
/// Errors: `DataMissing` when the file is absent, `Json` when it is not `{"text": ..}`, and
/// the errors of [`generate`].
pub fn load(
    data_dir: &Path,
    cfg: &NeedleConfig,
    count_tokens: CountTokens<'_>,
) -> Result<Vec<EvalItem>, EvalError> {
    let path = data_dir.join(ESSAYS_FILE);
    let raw = std::fs::read_to_string(&path).map_err(|e| EvalError::from_data_io(&path, e))?;
    let essays: EssaysFile =
        serde_json::from_str(&raw).map_err(|source| EvalError::Json { path, source })?;
    generate(&essays.text, cfg, count_tokens)
}

/// Generates one item per (length, depth) from `haystack` text (cycled when too short).
///
/// The haystack is the longest run of whole sentences that fits `length - needle tokens`; the
/// needle goes before the first sentence whose start lies past `depth%` of the haystack's
/// tokens, so it sits within one sentence of the requested token offset. Token counts add up
/// per sentence, which is exact for whitespace counting and close for BPE.
///
/// Errors: `Generation` when the haystack has no text, a depth is outside [0, 100], or a length
/// cannot hold the needle.
pub fn generate(
    haystack: &str,
    cfg: &NeedleConfig,
    count_tokens: CountTokens<'_>,
) -> Result<Vec<EvalItem>, EvalError> {
    let fail = |message: String| EvalError::Generation {
        dataset: "needle".into(),
        message,
    };
    let sentences: Vec<&str> = split_sentences(haystack)
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    if sentences.is_empty() {
        return Err(fail("the haystack text is empty".into()));
    }
    if let Some(d) = cfg
        .depth_percents
        .iter()
        .find(|d| !(0.0..=100.0).contains(*d))
    {
        return Err(fail(format!("depth {d}% is outside 0..=100")));
    }
    let needle_segment = format!("{} ", cfg.needle.trim());
    let needle_tokens = count_tokens(&needle_segment);
    let max_len = cfg.lengths_tokens.iter().copied().max().unwrap_or(0);

    // Sentences (cycled) with token counts, enough for the longest length.
    let mut pool: Vec<(String, usize)> = Vec::new();
    let mut pool_tokens = 0;
    for (i, s) in sentences.iter().cycle().enumerate() {
        if pool_tokens >= max_len {
            break;
        }
        if i == sentences.len() && pool_tokens == 0 {
            return Err(fail("the haystack text counts as zero tokens".into()));
        }
        let mut s = s.to_string();
        if !s.ends_with(char::is_whitespace) {
            s.push(' ');
        }
        let t = count_tokens(&s);
        pool_tokens += t;
        pool.push((s, t));
    }

    let mut items = Vec::new();
    for &length in &cfg.lengths_tokens {
        if length <= needle_tokens {
            return Err(fail(format!(
                "length {length} tokens cannot hold the {needle_tokens}-token needle"
            )));
        }
        let budget = length - needle_tokens;
        let mut hay_tokens = 0;
        let mut taken = 0;
        for (_, t) in &pool {
            if hay_tokens + t > budget {
                break;
            }
            hay_tokens += t;
            taken += 1;
        }
        let hay = &pool[..taken];
        for &depth in &cfg.depth_percents {
            items.push(build_item(
                hay,
                hay_tokens,
                length,
                depth,
                &needle_segment,
                needle_tokens,
                cfg,
                count_tokens,
            ));
        }
    }
    Ok(items)
}

#[allow(clippy::too_many_arguments)]
fn build_item(
    hay: &[(String, usize)],
    hay_tokens: usize,
    length: usize,
    depth: f64,
    needle_segment: &str,
    needle_tokens: usize,
    cfg: &NeedleConfig,
    count_tokens: CountTokens<'_>,
) -> EvalItem {
    let target = (depth / 100.0 * hay_tokens as f64).round() as usize;
    // Insert before the first sentence that would start past the target offset.
    let mut offset = 0;
    let mut insert_at = hay.len();
    for (i, (_, t)) in hay.iter().enumerate() {
        if offset + t > target {
            insert_at = i;
            break;
        }
        offset += t;
    }
    let mut segments: Vec<String> = Vec::with_capacity(hay.len() + 1);
    let mut segment_tokens: Vec<usize> = Vec::with_capacity(hay.len() + 1);
    for (i, (s, t)) in hay.iter().enumerate() {
        if i == insert_at {
            segments.push(needle_segment.to_string());
            segment_tokens.push(needle_tokens);
        }
        segments.push(s.clone());
        segment_tokens.push(*t);
    }
    if insert_at == hay.len() {
        segments.push(needle_segment.to_string());
        segment_tokens.push(needle_tokens);
    }
    let (documents, owner) = pack_documents(&segments, &segment_tokens, cfg.doc_tokens);
    let context_tokens = count_tokens(&segments.concat());
    let depth_label = depth.round() as u32;
    let mut tags = BTreeMap::new();
    tags.insert("task".into(), json!("needle"));
    tags.insert("depth_percent".into(), json!(depth));
    tags.insert("context_tokens_target".into(), json!(length));
    tags.insert("context_tokens".into(), json!(context_tokens));
    tags.insert("haystack_tokens".into(), json!(hay_tokens));
    tags.insert("needle_token_offset".into(), json!(offset));
    tags.insert("needle_doc".into(), json!(owner[insert_at]));
    EvalItem {
        id: format!("needle-len{length}-depth{depth_label:03}"),
        documents,
        question: cfg.question.clone(),
        answers: vec![cfg.answer.clone()],
        scorer: ScorerKind::Needle,
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::super::text::whitespace_tokens;
    use super::*;

    /// Sentences of 4 to 9 words, numbered so their order is visible.
    fn haystack() -> String {
        (0..3000)
            .map(|i| {
                let extra = "word ".repeat(i % 6);
                format!("Sentence {i} has {extra}text. ")
            })
            .collect()
    }

    #[test]
    fn needle_sits_at_the_requested_depth() {
        let cfg = NeedleConfig {
            lengths_tokens: vec![512, 2000],
            doc_tokens: 128,
            ..NeedleConfig::default()
        };
        let count = whitespace_tokens;
        let items = generate(&haystack(), &cfg, &count).unwrap();
        assert_eq!(items.len(), 2 * 10);
        let needle = cfg.needle.trim();
        let max_sentence = 9;
        for item in &items {
            let context = item.context_text();
            let length = item.tags["context_tokens_target"].as_u64().unwrap() as usize;
            let total = whitespace_tokens(&context);
            assert!(
                total <= length && total + max_sentence >= length,
                "{total} vs {length}"
            );
            assert_eq!(context.matches(needle).count(), 1);
            let at = context.find(needle).unwrap();
            let offset = whitespace_tokens(&context[..at]);
            let hay_tokens = total - whitespace_tokens(needle);
            let depth = item.tags["depth_percent"].as_f64().unwrap();
            let want = depth / 100.0 * hay_tokens as f64;
            assert!(
                (offset as f64 - want).abs() <= max_sentence as f64,
                "{}: needle at {offset}, wanted {want}",
                item.id
            );
            // The needle starts a sentence: the text before it ends a sentence.
            assert!(at == 0 || context[..at].trim_end().ends_with('.'));
            // Documents respect the budget and the needle's document is recorded.
            let doc = item.tags["needle_doc"].as_u64().unwrap() as usize;
            assert!(item.documents[doc].text.contains(needle));
            assert!(item
                .documents
                .iter()
                .all(|d| whitespace_tokens(&d.text) <= 128));
        }
        assert_eq!(items[0].id, "needle-len512-depth000");
        assert_eq!(items[19].id, "needle-len2000-depth100");
    }

    #[test]
    fn short_haystacks_are_cycled_and_bad_settings_fail() {
        let count = whitespace_tokens;
        let cfg = NeedleConfig {
            lengths_tokens: vec![300],
            depth_percents: vec![50.0],
            ..NeedleConfig::default()
        };
        let items = generate("Only one sentence here. ", &cfg, &count).unwrap();
        assert!(whitespace_tokens(&items[0].context_text()) > 250);
        assert!(generate("   ", &cfg, &count).is_err());
        let tiny = NeedleConfig {
            lengths_tokens: vec![5],
            ..cfg.clone()
        };
        assert!(generate("A b. ", &tiny, &count).is_err());
        let deep = NeedleConfig {
            depth_percents: vec![120.0],
            ..cfg
        };
        assert!(generate("A b. ", &deep, &count).is_err());
    }

    /// The real essays, when `scripts/fetch-data.sh` has fetched them (required under CI).
    #[test]
    fn real_essays_when_fetched() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data");
        if !dir.join(ESSAYS_FILE).exists() && std::env::var_os("CI").is_none() {
            eprintln!("skipping: data/{ESSAYS_FILE} absent (run scripts/fetch-data.sh)");
            return;
        }
        let count = whitespace_tokens;
        let items = load(&dir, &NeedleConfig::default(), &count).unwrap();
        assert_eq!(items.len(), 7 * 10);
        for item in &items {
            let length = item.tags["context_tokens_target"].as_u64().unwrap() as usize;
            let got = item.tags["context_tokens"].as_u64().unwrap() as usize;
            assert!(
                got <= length && got * 10 >= length * 9,
                "{}: {got}",
                item.id
            );
            assert_eq!(item.context_text().matches("Dolores Park").count(), 1);
        }
        let last = &items[69];
        assert!(last
            .context_text()
            .starts_with("April 2012A palliative care nurse"));
        assert!(last.documents.len() >= 8000 / 512);
    }

    #[test]
    fn missing_essays_file_says_how_to_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let count = whitespace_tokens;
        let err = load(dir.path(), &NeedleConfig::default(), &count).unwrap_err();
        assert!(err.to_string().contains("fetch-data.sh"), "{err}");
    }
}
