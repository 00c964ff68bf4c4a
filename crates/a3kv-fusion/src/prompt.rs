//! RAG prompt assembly: `prefix | chunk 1 | … | chunk n | question` with global positions
//! and a segment table saying which rows belong to which part.
//!
//! Each segment is tokenised alone and the prompt ids are their concatenation, so a cached
//! chunk's ids are exactly the rows it covers.

use a3kv_model::ModelTokenizer;

use crate::{FusionError, Result};

/// What a run of prompt rows is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// System prompt + instruction, at position 0.
    Prefix,
    /// Document chunk `i` (request order).
    Chunk(usize),
    /// The question and the assistant turn opening.
    Question,
}

/// Rows `[start, start + len)` of the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Kind.
    pub kind: SegmentKind,
    /// First row (= global position).
    pub start: usize,
    /// Row count.
    pub len: usize,
}

/// An assembled prompt. Positions are `0..T`: row `i` sits at position `i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RagPrompt {
    /// All token ids, `T` of them.
    pub ids: Vec<u32>,
    /// Segment table in row order.
    pub segments: Vec<Segment>,
}

impl RagPrompt {
    /// Assembles from already tokenised parts. Chunks must be non-empty; the question
    /// must be non-empty (its last row produces the first output token).
    pub fn from_ids(prefix: &[u32], chunks: &[Vec<u32>], question: &[u32]) -> Result<Self> {
        if question.is_empty() {
            return Err(FusionError::EmptyQuestion);
        }
        let mut ids = Vec::new();
        let mut segments = Vec::new();
        let mut push = |kind, part: &[u32], ids: &mut Vec<u32>| {
            segments.push(Segment {
                kind,
                start: ids.len(),
                len: part.len(),
            });
            ids.extend_from_slice(part);
        };
        push(SegmentKind::Prefix, prefix, &mut ids);
        for (i, c) in chunks.iter().enumerate() {
            if c.is_empty() {
                return Err(FusionError::InvalidParameter(format!("chunk {i} is empty")));
            }
            push(SegmentKind::Chunk(i), c, &mut ids);
        }
        push(SegmentKind::Question, question, &mut ids);
        Ok(Self { ids, segments })
    }

    /// Total rows `T`.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the prompt is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Prefix length `P`.
    pub fn prefix_len(&self) -> usize {
        self.segments.first().map(|s| s.len).unwrap_or(0)
    }

    /// Question length `Q`.
    pub fn question_len(&self) -> usize {
        self.segments.last().map(|s| s.len).unwrap_or(0)
    }

    /// Document rows `[P, T-Q)`.
    pub fn doc_range(&self) -> std::ops::Range<usize> {
        self.prefix_len()..self.len() - self.question_len()
    }

    /// Chunk segments in order.
    pub fn chunks(&self) -> impl Iterator<Item = &Segment> {
        self.segments
            .iter()
            .filter(|s| matches!(s.kind, SegmentKind::Chunk(_)))
    }

    /// Ids of segment `s`.
    pub fn segment_ids(&self, s: &Segment) -> &[u32] {
        &self.ids[s.start..s.start + s.len]
    }
}

/// Splits a document's ids into chunks of at most `max_tokens` (the seed's chunking).
pub fn split_ids(ids: &[u32], max_tokens: usize) -> Vec<Vec<u32>> {
    ids.chunks(max_tokens.max(1)).map(<[u32]>::to_vec).collect()
}

/// One document of a RAG request, as [`RagParts::assemble`] takes it.
#[derive(Debug, Clone, Copy)]
pub enum RagDocument<'a> {
    /// Text: tokenised alone and cut into chunks ([`RagParts::document_chunks`]).
    Text(&'a str),
    /// Chunks tokenised earlier by [`RagParts::document_chunks`] (a stored document), used as
    /// they are.
    Chunks(&'a [Vec<u32>]),
}

/// Tokenised RAG request parts built with the model's chat template: the one prompt assembly
/// of every caller (the engine, the CLI, the tests' reference path), so a chunk cached by one
/// is found by all.
#[derive(Debug, Clone)]
pub struct RagParts {
    /// Prefix ids (system + instruction).
    pub prefix: Vec<u32>,
    /// Chunks' ids (documents split to at most `max_chunk_tokens`).
    pub chunks: Vec<Vec<u32>>,
    /// Question ids (question + assistant turn opening).
    pub question: Vec<u32>,
    /// For each document in request order, the range of [`RagParts::chunks`] it became.
    pub documents: Vec<std::ops::Range<usize>>,
}

impl RagParts {
    /// Tokenises `documents` and `question` with the template's RAG pieces. Documents
    /// longer than `max_chunk_tokens` are split; empty documents are rejected.
    ///
    /// # Errors
    /// As [`RagParts::assemble`].
    pub fn build(
        tok: &ModelTokenizer,
        system: Option<&str>,
        instruction: &str,
        documents: &[String],
        question: &str,
        max_chunk_tokens: usize,
    ) -> Result<Self> {
        Self::assemble(
            tok,
            system,
            instruction,
            documents.iter().map(|d| RagDocument::Text(d)),
            question,
            max_chunk_tokens,
        )
    }

    /// Assembles a RAG prompt's parts: the prefix `rag_prefix(system, instruction)`, each
    /// document's chunks (text tokenised alone and split to at most `max_chunk_tokens`,
    /// stored chunks as given), and the question `rag_suffix(question)`, each tokenised alone.
    ///
    /// # Errors
    /// [`FusionError::InvalidParameter`] for a document with no tokens ("document {i} is
    /// empty"); [`FusionError::EmptyQuestion`] for a blank question; tokenizer errors.
    pub fn assemble<'a>(
        tok: &ModelTokenizer,
        system: Option<&str>,
        instruction: &str,
        documents: impl IntoIterator<Item = RagDocument<'a>>,
        question: &str,
        max_chunk_tokens: usize,
    ) -> Result<Self> {
        let prefix = tok.encode(&tok.template().rag_prefix(system, instruction))?;
        let mut chunks = Vec::new();
        let mut ranges = Vec::new();
        for (i, d) in documents.into_iter().enumerate() {
            let start = chunks.len();
            match d {
                RagDocument::Text(text) => {
                    let ids = tok.encode(text)?;
                    if ids.is_empty() {
                        return Err(FusionError::InvalidParameter(format!(
                            "document {i} is empty"
                        )));
                    }
                    chunks.extend(split_ids(&ids, max_chunk_tokens));
                }
                RagDocument::Chunks(c) => chunks.extend_from_slice(c),
            }
            ranges.push(start..chunks.len());
        }
        if question.trim().is_empty() {
            return Err(FusionError::EmptyQuestion);
        }
        let question = tok.encode(&tok.template().rag_suffix(question))?;
        Ok(Self {
            prefix,
            chunks,
            question,
            documents: ranges,
        })
    }

    /// One document's chunks as [`RagParts::assemble`] cuts them: its text tokenised alone,
    /// split to at most `max_chunk_tokens` (for storing a document ahead of the requests that
    /// cite it).
    ///
    /// # Errors
    /// [`FusionError::InvalidParameter`] ("empty document") when the text has no tokens;
    /// tokenizer errors.
    pub fn document_chunks(
        tok: &ModelTokenizer,
        text: &str,
        max_chunk_tokens: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let ids = tok.encode(text)?;
        if ids.is_empty() {
            return Err(FusionError::InvalidParameter("empty document".into()));
        }
        Ok(split_ids(&ids, max_chunk_tokens))
    }

    /// The chunks of document `i` (request order); empty when there is no such document.
    pub fn document(&self, i: usize) -> &[Vec<u32>] {
        self.documents
            .get(i)
            .and_then(|r| self.chunks.get(r.clone()))
            .unwrap_or(&[])
    }

    /// The cached parts in row order: the prefix (when it has tokens), then every chunk.
    pub fn cached_parts(&self) -> impl Iterator<Item = &Vec<u32>> {
        (!self.prefix.is_empty())
            .then_some(&self.prefix)
            .into_iter()
            .chain(&self.chunks)
    }

    /// The assembled prompt.
    pub fn prompt(&self) -> Result<RagPrompt> {
        RagPrompt::from_ids(&self.prefix, &self.chunks, &self.question)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_rows_in_order() {
        let p = RagPrompt::from_ids(&[1, 2], &[vec![3, 4, 5], vec![6]], &[7, 8]).unwrap();
        assert_eq!(p.len(), 8);
        assert_eq!(p.prefix_len(), 2);
        assert_eq!(p.question_len(), 2);
        assert_eq!(p.doc_range(), 2..6);
        let c: Vec<_> = p.chunks().map(|s| (s.start, s.len)).collect();
        assert_eq!(c, vec![(2, 3), (5, 1)]);
        assert!(RagPrompt::from_ids(&[1], &[vec![]], &[2]).is_err());
        assert!(matches!(
            RagPrompt::from_ids(&[1], &[], &[]),
            Err(FusionError::EmptyQuestion)
        ));
        assert_eq!(
            split_ids(&[1, 2, 3, 4, 5], 2),
            vec![vec![1, 2], vec![3, 4], vec![5]]
        );
    }
}
