//! 16 concurrent requests (mixed methods and document sets) through the batched pipeline
//! give the same greedy tokens as each request run alone with the fusion crate's
//! reference path (`fused_prefill` + `generate`).

mod common;

use std::time::Duration;

use a3kv_fusion::{fused_prefill, generate, precompute_chunk, FusionParams, Method, RagParts};
use a3kv_model::{LoadedModel, SamplingParams, DEFAULT_RAG_INSTRUCTION};
use a3kv_sched::Engine;
use common::*;

const QUESTIONS: [&str; 4] = [
    "Which place is described first?",
    "Who or what is mentioned?",
    "What is the main fact?",
    "Where is it located?",
];

fn alone(m: &LoadedModel, docs: &[usize], q: &str, method: Method, max_tokens: usize) -> Vec<u32> {
    let texts: Vec<String> = docs.iter().map(|&d| DOCS[d].to_string()).collect();
    let parts =
        RagParts::build(&m.tokenizer, None, DEFAULT_RAG_INSTRUCTION, &texts, q, 512).unwrap();
    let prompt = parts.prompt().unwrap();
    let prefix = precompute_chunk(&m.model, &parts.prefix, None).unwrap();
    let chunks: Vec<_> = parts
        .chunks
        .iter()
        .map(|c| precompute_chunk(&m.model, c, None).unwrap())
        .collect();
    let params = FusionParams::method(method);
    let mut out = fused_prefill(&m.model, &prompt, Some(prefix), &chunks, &params, false).unwrap();
    generate(
        &m.model,
        &mut out.cache,
        &out.logits,
        SamplingParams::default(),
        m.tokenizer.stop_ids(),
        max_tokens,
        |_| true,
    )
    .unwrap()
    .ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_requests_match_each_run_alone() {
    let Some(m) = model() else { return };
    let methods = [
        Method::A3,
        Method::CacheBlend,
        Method::Epic,
        Method::Reuse,
        Method::Full,
    ];
    let mut cases = Vec::new();
    for i in 0..16usize {
        let docs: Vec<usize> = (0..(2 + i % 2)).map(|j| (i + 2 * j) % DOCS.len()).collect();
        cases.push((docs, QUESTIONS[i % 4], methods[i % methods.len()], 6usize));
    }
    let engine = Engine::start(config(), m.clone()).await.unwrap();
    let rxs: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (d, q, meth, n))| {
            engine
                .submit(rag(&format!("r{i}"), d, q, *meth, *n))
                .unwrap()
        })
        .collect();
    let mut outs = Vec::new();
    for rx in rxs {
        outs.push(collect(rx, Duration::from_secs(120)).await);
    }
    let mut batched = 0;
    for ((docs, q, meth, n), out) in cases.iter().zip(&outs) {
        let (reason, usage) = out.finish.clone().unwrap();
        assert!(reason == "stop" || reason == "length");
        assert_eq!(usage.completion_tokens, out.ids.len());
        let report = usage.fusion.as_ref().unwrap();
        assert_eq!(report.method, meth.as_str());
        batched = batched.max(usage.trace.batch_requests);
        let want = alone(&m, docs, q, *meth, *n);
        assert_eq!(out.ids, want, "{} over {docs:?}", meth.as_str());
    }
    assert!(batched > 1, "no recompute batch held more than one request");
    engine.shutdown(Duration::from_secs(5)).await;
    assert_eq!(engine.running(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_requests_stream_and_stop_strings_cut_the_text() {
    let Some(m) = model() else { return };
    let engine = Engine::start(config(), m).await.unwrap();
    let chat = |stop: Vec<String>| a3kv_sched::GenerateRequest {
        prompt: a3kv_sched::PromptSpec::Chat {
            messages: vec![a3kv_model::ChatMessage {
                role: "user".into(),
                content: "Write one sentence about the sea.".into(),
            }],
        },
        stop,
        logprobs: None,
        ..rag("chat", &[], "x", Method::Full, 12)
    };
    let first = collect(
        engine.submit(chat(Vec::new())).unwrap(),
        Duration::from_secs(60),
    )
    .await;
    let (_, usage) = first.finish.clone().unwrap();
    assert!(usage.fusion.is_none());
    assert!(first.text.len() > 12, "{:?}", first.text);
    // A stop string from the middle of that text: the output ends right before it.
    let start = first
        .text
        .char_indices()
        .nth(first.text.chars().count() / 2)
        .map(|(i, _)| i)
        .unwrap();
    let stop: String = first.text[start..].chars().take(3).collect();
    let at = first.text.find(&stop).unwrap();
    let second = collect(
        engine.submit(chat(vec![stop.clone()])).unwrap(),
        Duration::from_secs(60),
    )
    .await;
    let (reason, _) = second.finish.unwrap();
    assert_eq!(reason, "stop");
    assert_eq!(second.text, first.text[..at], "stop {stop:?}");
    engine.shutdown(Duration::from_secs(5)).await;
}
