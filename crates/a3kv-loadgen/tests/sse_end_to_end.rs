//! End to end against a well-behaved SSE server on 127.0.0.1:0: TTFT is taken at the first
//! non-empty content (not the first byte), inter-token gaps and tokens are counted, usage and
//! the fusion extension are read, warm-up is excluded, and the request bodies follow the
//! contract (documents extension or inlined documents).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{args, chat_router, serve, Received, Script};

const SCRIPT: Script = Script {
    first_token_delay: Duration::from_millis(60),
    token_gap: Duration::from_millis(15),
    tokens: 5,
};

#[tokio::test]
async fn measures_ttft_itl_tokens_and_usage() {
    let received: Received = Arc::default();
    let target = serve(chat_router(SCRIPT, Arc::clone(&received))).await;
    let out = std::env::temp_dir().join(format!("a3kv-loadgen-e2e-{}.json", std::process::id()));
    let a = args(
        &target,
        &[
            "--arrival",
            "closed",
            "--concurrency",
            "2",
            "--num-requests",
            "6",
            "--num-docs",
            "20",
            "--doc-words",
            "30",
            "--docs-per-request",
            "3",
            "--output-tokens",
            "5",
            "--fusion-method",
            "a3",
            "--recompute-ratio",
            "0.15",
            "--slo-ttft",
            "10s",
            "--out",
            out.to_str().unwrap(),
            "--detailed",
            "--request-timeout-secs",
            "5",
        ],
    );
    let report = tokio::time::timeout(Duration::from_secs(10), a3kv_loadgen::run(a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.runs.len(), 1);
    let s = &report.runs[0].summary;
    assert_eq!(
        (s.sent, s.measured, s.succeeded, s.failed),
        (6, 6, 6, 0),
        "{:?}",
        s.errors
    );
    let ttft = s.ttft_secs.unwrap();
    assert_eq!(ttft.count, 6);
    // The empty role chunk arrives at once; TTFT must wait for the first real token.
    assert!(ttft.p50 >= 0.06, "ttft {ttft:?}");
    let itl = s.itl_secs.unwrap();
    assert_eq!(itl.count, 6 * 4, "4 gaps between 5 tokens");
    assert!(itl.p50 >= 0.010, "itl {itl:?}");
    assert!(s.tpot_secs.unwrap().p50 >= 0.010);
    assert_eq!(s.output_tokens_total, 30);
    assert_eq!(s.prompt_tokens_total, 6 * 103);
    let f = s.fusion.unwrap();
    assert_eq!(
        (f.requests, f.reused_tokens, f.recomputed_tokens),
        (6, 6 * 3 * 85, 6 * 3 * 15)
    );
    assert_eq!(s.slo_attainment, Some(1.0));
    let recs = report.runs[0].records.as_ref().unwrap();
    assert!(recs
        .iter()
        .all(|r| r.content_chunks == 5 && r.http_status == Some(200)));
    assert_eq!(
        recs[0].fusion.as_ref().unwrap().method.as_deref(),
        Some("a3")
    );

    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 6);
    for b in &bodies {
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["max_tokens"], 5);
        assert_eq!(b["fusion"]["method"], "a3");
        assert_eq!(b["fusion"]["recompute_ratio"], 0.15);
        let docs = b["documents"].as_array().unwrap();
        assert_eq!(docs.len(), 3);
        assert!(docs
            .iter()
            .all(|d| d["text"].as_str().unwrap().split(' ').count() == 30));
        assert!(docs
            .iter()
            .all(|d| d["id"].as_str().unwrap().starts_with("doc-")));
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(json["runs"][0]["summary"]["succeeded"], 6);
    assert_eq!(json["runs"][0]["records"].as_array().unwrap().len(), 6);
    std::fs::remove_file(&out).unwrap();
    let table = report.render();
    assert!(table.contains("TTFT") && table.contains("6 ok"), "{table}");
}

#[tokio::test]
async fn inline_documents_warmup_and_same_seed_same_bodies() {
    let script = Script {
        first_token_delay: Duration::from_millis(1),
        token_gap: Duration::ZERO,
        tokens: 2,
    };
    let received: Received = Arc::default();
    let target = serve(chat_router(script, Arc::clone(&received))).await;
    let flags = [
        "--arrival",
        "poisson",
        "--rate",
        "40",
        "--duration-secs",
        "0.8",
        "--warmup-secs",
        "0.3",
        "--inline-documents",
        "--doc-words",
        "10",
        "--num-docs",
        "8",
        "--seed",
        "7",
        "--fusion-method",
        "a3",
    ];
    let run = || async { a3kv_loadgen::run(args(&target, &flags)).await.unwrap() };
    let first = tokio::time::timeout(Duration::from_secs(10), run())
        .await
        .unwrap();
    let n = received.lock().unwrap().len();
    let second = tokio::time::timeout(Duration::from_secs(10), run())
        .await
        .unwrap();
    let bodies = received.lock().unwrap().clone();
    let s = &first.runs[0].summary;
    assert_eq!(s.sent, n);
    assert_eq!(
        second.runs[0].summary.sent, n,
        "same seed, same number of arrivals"
    );
    assert!(s.warmup_requests > 0 && s.measured > 0, "{s:?}");
    assert_eq!(s.warmup_requests + s.measured, s.sent);
    assert_eq!(s.failed, 0, "{:?}", s.errors);
    let mut a: Vec<String> = bodies[..n].iter().map(|b| b.to_string()).collect();
    let mut b: Vec<String> = bodies[n..].iter().map(|b| b.to_string()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same seed sends the same requests");
    for body in &bodies {
        assert!(body.get("documents").is_none() && body.get("fusion").is_none());
        let content = body["messages"][0]["content"].as_str().unwrap();
        assert!(
            content.contains("[Document 1]") && content.contains("Question: "),
            "{content}"
        );
    }
}
