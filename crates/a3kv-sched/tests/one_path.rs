//! One request path: `a3kv eval` measures fidelity through the engine
//! (`GenerateRequest::first_token_logits`), so the engine's first-token logits must be the
//! fusion crate's reference (`fused_prefill` on the prompt `RagParts::build` assembles) for
//! `full` and `a3`, and the greedy answers must agree, on real HotpotQA items.
//!
//! Tolerance: max |Δlogit| ≤ 1e-4, the bound of the batched stages' reference tests
//! (`steps.rs`); logits here are O(10). Both paths compute in f32 on the same weights from the
//! same chunk KV with the same matmul shapes (a request alone forms its own recompute batch),
//! so today they agree bit for bit (0 measured); the margin only allows a kernel that splits a
//! reduction differently by thread count. A wrong prompt, position, selection or cache moves
//! logits by O(0.1) or more. Greedy ids must match exactly.
//!
//! Cost: the two shortest of the first fifty items (2 and 10 documents, about 400 and 1,000
//! prompt tokens); the reference runs beside the engine.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use a3kv_fusion::{fused_prefill, generate, precompute_chunk, FusionParams, Method, RagParts};
use a3kv_model::{LoadedModel, SamplingParams, DEFAULT_RAG_INSTRUCTION};
use a3kv_sched::{DocumentRef, Engine, GenerateRequest, PromptSpec};
use common::*;

const ITEMS: usize = 2;
const MAX_TOKENS: usize = 8;
const TOLERANCE: f32 = 1e-4;

/// The `ITEMS` shortest of the first fifty HotpotQA items, or `None` (with a note) when the
/// data is absent and `CI` unset.
fn items() -> Option<Vec<a3kv_eval::EvalItem>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data");
    match a3kv_eval::datasets::hotpotqa::load(&dir, Some(50)) {
        Ok(mut items) => {
            items.sort_by_key(|i| i.context_text().len());
            items.truncate(ITEMS);
            Some(items)
        }
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must fetch the data (scripts/fetch-data.sh): {e}"
            );
            eprintln!("note: {e}; test skipped (run scripts/fetch-data.sh)");
            None
        }
    }
}

/// The reference: the prompt as `RagParts::build` assembles it, `fused_prefill` on freshly
/// precomputed chunks, `generate`. Returns (prompt rows, first logits, greedy ids).
fn reference(
    m: &LoadedModel,
    docs: &[String],
    question: &str,
    method: Method,
) -> (usize, Vec<f32>, Vec<u32>) {
    let tok = &m.tokenizer;
    let parts = RagParts::build(tok, None, DEFAULT_RAG_INSTRUCTION, docs, question, 512).unwrap();
    let prompt = parts.prompt().unwrap();
    // `full` reads no cache.
    let cached = method != Method::Full;
    let prefix = cached.then(|| precompute_chunk(&m.model, &parts.prefix, None).unwrap());
    let chunks: Vec<_> = parts
        .chunks
        .iter()
        .filter(|_| cached)
        .map(|c| precompute_chunk(&m.model, c, None).unwrap())
        .collect();
    let params = FusionParams::method(method);
    let mut out = fused_prefill(&m.model, &prompt, prefix, &chunks, &params, false).unwrap();
    let logits: Vec<f32> = out.logits.to_vec1().unwrap();
    let ids = generate(
        &m.model,
        &mut out.cache,
        &out.logits,
        SamplingParams::default(),
        tok.stop_ids(),
        MAX_TOKENS,
        |_| true,
    )
    .unwrap()
    .ids;
    (prompt.len(), logits, ids)
}

const METHODS: [Method; 2] = [Method::Full, Method::A3];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_first_token_logits_equal_fused_prefill_on_hotpotqa() {
    let Some(m) = model() else { return };
    let Some(items) = items() else { return };
    let cases: Vec<(String, Vec<String>, String)> = items
        .iter()
        .map(|i| {
            let docs = i.documents.iter().map(|d| d.chunk_text()).collect();
            (i.id.clone(), docs, i.question.clone())
        })
        .collect();
    // The reference runs on its own thread while the engine serves (halves the wall time).
    let (m2, cases2) = (m.clone(), cases.clone());
    let references = tokio::task::spawn_blocking(move || {
        cases2
            .iter()
            .flat_map(|(_, docs, q)| METHODS.map(|meth| reference(&m2, docs, q, meth)))
            .collect::<Vec<_>>()
    });
    let engine = Engine::start(config(), m.clone()).await.unwrap();
    let mut served = Vec::new();
    for (id, docs, question) in &cases {
        // As `a3kv eval` does: the documents are stored first, then one request per method.
        engine
            .put_chunks(docs.iter().map(|d| (None, d.clone())).collect(), false)
            .await
            .unwrap();
        for method in METHODS {
            let req = GenerateRequest {
                request_id: format!("{id}-{}", method.as_str()),
                prompt: PromptSpec::Rag {
                    system: None,
                    documents: docs
                        .iter()
                        .map(|d| DocumentRef::Text {
                            id: None,
                            text: d.clone(),
                        })
                        .collect(),
                    question: question.clone(),
                },
                fusion: Some(FusionParams::method(method)),
                first_token_logits: true,
                ..rag("x", &[], "x", method, MAX_TOKENS)
            };
            let out = collect(engine.submit(req).unwrap(), Duration::from_secs(120)).await;
            served.push((format!("item {id} {}", method.as_str()), method, out));
        }
    }
    let references = references.await.unwrap();
    let mut worst = 0f32;
    for ((what, method, out), (rows, want, ids)) in served.into_iter().zip(references) {
        let (_, usage) = out.finish.unwrap();
        let got = usage.first_token_logits.expect("logits were asked for");
        assert_eq!(usage.prompt_tokens, rows, "{what}: prompt rows");
        assert_eq!(got.len(), want.len(), "{what}: vocabulary");
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{what}: max |Δlogit| {diff:e}");
        assert!(diff <= TOLERANCE, "{what}: max |Δlogit| {diff}");
        worst = worst.max(diff);
        assert_eq!(out.ids, ids, "{what}: greedy ids");
        let report = usage.fusion.expect("RAG usage carries the report");
        assert_eq!(report.method, method.as_str());
        if method == Method::A3 {
            // Documents were stored: all but the selection and the question is reused.
            assert!(report.reused_tokens > 0 && report.recomputed_tokens > 0);
        }
    }
    eprintln!("worst max |Δlogit| {worst:e}");
    // Not asked for: not kept.
    let plain = collect(
        engine
            .submit(rag("plain", &[0], "Where is it?", Method::A3, 1))
            .unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert!(plain.finish.unwrap().1.first_token_logits.is_none());
    engine.shutdown(Duration::from_secs(5)).await;
}
