//! Text helpers shared by the generated datasets: sentence segmentation that keeps every byte,
//! and packing of consecutive segments into token-bounded documents.

use crate::item::Document;

/// A token counter: the model's tokenizer in production, a whitespace counter in tests.
pub type CountTokens<'a> = &'a dyn Fn(&str) -> usize;

/// Splits `text` into sentence segments whose concatenation is exactly `text`.
///
/// A sentence ends after `.`, `!` or `?` (and any closing quotes or brackets right after it)
/// when whitespace follows; that whitespace stays at the end of the segment, so inserting a
/// new segment between two others always lands on a sentence boundary.
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut segments = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        while let Some(&(_, next)) = chars.peek() {
            if matches!(next, '"' | '\'' | ')' | ']' | '”' | '’') {
                chars.next();
            } else {
                break;
            }
        }
        let mut saw_space = false;
        while let Some(&(_, next)) = chars.peek() {
            if next.is_whitespace() {
                saw_space = true;
                chars.next();
            } else {
                break;
            }
        }
        if saw_space {
            let end = chars.peek().map_or(text.len(), |&(i, _)| i);
            segments.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        segments.push(&text[start..]);
    }
    segments
}

/// Packs consecutive `segments` (with their token counts) into untitled documents of at most
/// `max_tokens` tokens each, never splitting a segment; a segment longer than `max_tokens`
/// becomes a document of its own. Returns the documents and, for each segment, the index of
/// the document that holds it.
pub fn pack_documents(
    segments: &[String],
    segment_tokens: &[usize],
    max_tokens: usize,
) -> (Vec<Document>, Vec<usize>) {
    let mut docs: Vec<Document> = Vec::new();
    let mut owner = Vec::with_capacity(segments.len());
    let mut current = String::new();
    let mut current_tokens = 0;
    for (segment, &tokens) in segments.iter().zip(segment_tokens) {
        if !current.is_empty() && current_tokens + tokens > max_tokens {
            docs.push(Document::untitled(std::mem::take(&mut current)));
            current_tokens = 0;
        }
        current.push_str(segment);
        current_tokens += tokens;
        owner.push(docs.len());
    }
    if !current.is_empty() {
        docs.push(Document::untitled(current));
    }
    (docs, owner)
}

/// Counts tokens the way the tests do: whitespace-separated words.
#[cfg(test)]
pub fn whitespace_tokens(s: &str) -> usize {
    s.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_keep_every_byte() {
        let text = "One. Two!  \"Three?\" Four.Five is one. Tail without end";
        let segments = split_sentences(text);
        assert_eq!(
            segments,
            vec![
                "One. ",
                "Two!  ",
                "\"Three?\" ",
                "Four.Five is one. ",
                "Tail without end"
            ]
        );
        assert_eq!(segments.concat(), text);
        assert!(split_sentences("").is_empty());
    }

    #[test]
    fn packing_respects_the_budget() {
        let segments: Vec<String> = ["a b. ", "c d e. ", "f. ", "g h i j k l. "]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let tokens: Vec<usize> = segments.iter().map(|s| whitespace_tokens(s)).collect();
        let (docs, owner) = pack_documents(&segments, &tokens, 5);
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, vec!["a b. c d e. ", "f. ", "g h i j k l. "]);
        assert_eq!(owner, vec![0, 0, 1, 2]);
    }
}
