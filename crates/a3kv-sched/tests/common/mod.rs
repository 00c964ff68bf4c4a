//! Shared helpers of the engine's integration tests: the real model (skipped with a note
//! only when absent and `CI` is unset), engine configs, request builders, stream readers.
//! The crate's own unit tests include this file too (`lib.rs`, `test_common`), so it names
//! the crate `a3kv_sched` in both builds.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use a3kv_fusion::{FusionParams, Method};
use a3kv_model::{default_model_path, load_model, LoadOptions, LoadedModel, SamplingParams};
use a3kv_sched::{DocumentRef, EngineConfig, EngineEvent, GenerateRequest, PromptSpec, Usage};
use tokio::sync::mpsc::Receiver;

/// The default model, loaded once per test binary; `None` (with a note) when absent and
/// `CI` is unset.
pub fn model() -> Option<LoadedModel> {
    static M: OnceLock<Option<LoadedModel>> = OnceLock::new();
    M.get_or_init(|| {
        let path = default_model_path().filter(|p| p.exists());
        match path {
            Some(p) => Some(load_model(&p, &LoadOptions::default()).expect("load model")),
            None => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must fetch the model (scripts/fetch-model.sh)"
                );
                eprintln!("note: model absent, test skipped (run scripts/fetch-model.sh)");
                None
            }
        }
    })
    .clone()
}

/// A small engine config: 2 compute threads, memory store.
pub fn config() -> EngineConfig {
    EngineConfig {
        compute_threads: 2,
        max_new_tokens: 256,
        batch_wait_ms: 5,
        ..EngineConfig::default()
    }
}

/// Documents for the tests (short, distinct).
pub const DOCS: [&str; 6] = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was designed by Gustave Eiffel's company and completed in 1889 for the World's Fair.",
    "Mount Kilimanjaro is a dormant volcano in Tanzania. It is the highest mountain in Africa, rising about 5,895 metres above sea level.",
    "The Great Barrier Reef is the world's largest coral reef system, located off the coast of Queensland, Australia, and visible from space.",
    "Ada Lovelace was an English mathematician who wrote the first algorithm intended to be carried out by Charles Babbage's Analytical Engine.",
    "The Amazon River in South America is the largest river by discharge volume of water in the world, flowing through Brazil, Peru and Colombia.",
    "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity and won Nobel Prizes in both physics and chemistry.",
];

/// A greedy RAG request over `docs` (inline texts) with `method`.
pub fn rag(
    id: &str,
    docs: &[usize],
    question: &str,
    method: Method,
    max_tokens: usize,
) -> GenerateRequest {
    GenerateRequest {
        request_id: id.into(),
        prompt: PromptSpec::Rag {
            system: None,
            documents: docs
                .iter()
                .map(|&d| DocumentRef::Text {
                    id: None,
                    text: DOCS[d].into(),
                })
                .collect(),
            question: question.into(),
        },
        fusion: Some(FusionParams::method(method)),
        sampling: SamplingParams::default(),
        max_tokens,
        stop: Vec::new(),
        logprobs: None,
        first_token_logits: false,
    }
}

/// What a finished stream held.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ids: Vec<u32>,
    pub text: String,
    pub finish: Result<(String, Usage), a3kv_sched::EngineError>,
}

/// Reads a stream to its end (bounded by `limit`).
pub async fn collect(mut rx: Receiver<EngineEvent>, limit: Duration) -> Outcome {
    let mut ids = Vec::new();
    let mut text = String::new();
    let fut = async {
        while let Some(ev) = rx.recv().await {
            match ev {
                EngineEvent::Token {
                    token_id, text: t, ..
                } => {
                    ids.push(token_id);
                    text.push_str(&t);
                }
                EngineEvent::Finished {
                    finish_reason,
                    usage,
                } => return Ok((finish_reason, usage)),
                EngineEvent::Failed(e) => return Err(e),
            }
        }
        Err(a3kv_sched::EngineError::Internal(
            "stream ended without an end event".into(),
        ))
    };
    let finish = tokio::time::timeout(limit, fut)
        .await
        .expect("request did not finish in time");
    Outcome { ids, text, finish }
}

/// Polls `f` every 10 ms until it holds or `limit` passes; its last value.
pub async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
