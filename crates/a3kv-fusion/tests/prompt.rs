//! Prompt assembly on the real tokenizer (SmolLM2-135M): `RagParts::assemble` with a stored
//! document's chunks gives the same ids as with its text, records which chunks each document
//! became, and `document_chunks` cuts a text as the assembly does.

use std::path::PathBuf;

use a3kv_fusion::{RagDocument, RagParts};
use a3kv_model::{load_model, LoadOptions, LoadedModel, DEFAULT_RAG_INSTRUCTION};

/// The model, or `None` (with a note) when absent and `CI` is unset.
fn model() -> Option<LoadedModel> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the model (scripts/fetch-model.sh)"
        );
        eprintln!("SKIP: model absent; run scripts/fetch-model.sh");
        return None;
    }
    Some(load_model(&path, &LoadOptions::default()).unwrap())
}

#[test]
fn stored_chunks_assemble_as_their_text_and_documents_map_to_their_chunks() {
    let Some(m) = model() else { return };
    let tok = &m.tokenizer;
    let docs = [
        "Quenby is a market town on the river Wend. ".repeat(8),
        "The Zorblat festival is held every spring.".to_string(),
    ];
    let q = "Where is the Zorblat festival held?";
    let built = RagParts::build(
        tok,
        Some("Be brief."),
        DEFAULT_RAG_INSTRUCTION,
        &docs,
        q,
        16,
    )
    .unwrap();
    assert_eq!(built.documents.len(), 2);
    let first = RagParts::document_chunks(tok, &docs[0], 16).unwrap();
    assert!(first.len() > 1, "the long document is split");
    assert_eq!(built.document(0), first.as_slice());
    assert_eq!(
        built.document(1),
        RagParts::document_chunks(tok, &docs[1], 16)
            .unwrap()
            .as_slice()
    );
    assert!(built.document(2).is_empty());

    // The first document as stored chunks, the second as text: the same prompt.
    let mixed = RagParts::assemble(
        tok,
        Some("Be brief."),
        DEFAULT_RAG_INSTRUCTION,
        [RagDocument::Chunks(&first), RagDocument::Text(&docs[1])],
        q,
        16,
    )
    .unwrap();
    assert_eq!(mixed.prompt().unwrap(), built.prompt().unwrap());
    assert_eq!(mixed.documents, built.documents);
    // The prefix first, then every chunk.
    let parts: Vec<_> = built.cached_parts().cloned().collect();
    assert_eq!(parts[0], built.prefix);
    assert_eq!(parts[1..], built.chunks[..]);

    assert!(RagParts::document_chunks(tok, "", 16).is_err());
    assert!(RagParts::build(tok, None, DEFAULT_RAG_INSTRUCTION, &[String::new()], q, 16).is_err());
    assert!(RagParts::build(tok, None, DEFAULT_RAG_INSTRUCTION, &docs, "  ", 16).is_err());
}
