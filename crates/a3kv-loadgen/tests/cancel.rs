//! `--cancel-fraction`: the requests the seed picks are abandoned mid-stream (the server sees
//! its response body dropped before `[DONE]`), counted as `cancelled` and not as failures;
//! `--method-mix` sends the methods in turn within one run.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use a3kv_loadgen::{CancelAt, CancelPlan, RequestErrorKind};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use common::{args, data, serve, sse};
use serde_json::{json, Value};

const TOKENS: usize = 12;

/// Counts response bodies that ended with `[DONE]` and those dropped before it.
struct Tracker {
    seen: Seen,
    finished: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.seen.finished
        } else {
            &self.seen.dropped_early
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Seen {
    finished: Arc<AtomicUsize>,
    dropped_early: Arc<AtomicUsize>,
    methods: Arc<Mutex<BTreeMap<String, usize>>>,
}

/// Streams `TOKENS` tokens 40 ms apart after a role chunk, then usage and `[DONE]`.
async fn slow_stream(State(seen): State<Seen>, Json(body): Json<Value>) -> Response {
    let method = body["fusion"]["method"].as_str().unwrap_or("").to_string();
    *seen.methods.lock().unwrap().entry(method).or_default() += 1;
    let tracker = Tracker {
        seen: seen.clone(),
        finished: false,
    };
    let events = futures::stream::unfold((0usize, tracker), |(i, mut t)| async move {
        let text = match i {
            0 => data(&json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})),
            i if i <= TOKENS => {
                tokio::time::sleep(Duration::from_millis(40)).await;
                data(&json!({"choices":[{"index":0,"delta":{"content": format!("t{i} ")}}]}))
            }
            i if i == TOKENS + 1 => data(
                &json!({"choices":[],"usage":{"prompt_tokens": 10, "completion_tokens": TOKENS}}),
            ),
            i if i == TOKENS + 2 => {
                t.finished = true;
                "data: [DONE]\n\n".to_string()
            }
            _ => return None,
        };
        Some((Ok::<_, Infallible>(Bytes::from(text)), (i + 1, t)))
    });
    sse(Body::from_stream(events))
}

#[tokio::test]
async fn cancelled_requests_are_dropped_and_counted_apart_from_failures() {
    let seen = Seen::default();
    let router = Router::new()
        .route("/v1/chat/completions", post(slow_stream))
        .with_state(seen.clone());
    let target = serve(router).await;
    let n = 40;
    let a = args(
        &target,
        &[
            "--arrival",
            "closed",
            "--concurrency",
            "4",
            "--num-requests",
            "40",
            "--num-docs",
            "6",
            "--doc-words",
            "10",
            "--docs-per-request",
            "2",
            "--seed",
            "11",
            "--cancel-fraction",
            "0.4",
            "--cancel-max-delay-secs",
            "0.2",
            "--method-mix",
            "a3,cacheblend,full",
            "--detailed",
        ],
    );
    let report = tokio::time::timeout(Duration::from_secs(60), a3kv_loadgen::run(a))
        .await
        .expect("bounded run")
        .expect("run");
    let run = &report.runs[0];
    let s = &run.summary;
    // Every response lasts ~480 ms, longer than any cancellation point: the plan decides.
    let plan = CancelPlan {
        fraction: 0.4,
        max_delay_secs: 0.2,
        seed: 11,
    };
    let planned = (0..n).filter(|&i| plan.for_request(i).is_some()).count();
    assert!(planned > 5 && planned < 30, "{planned}");
    assert_eq!(s.sent, n);
    assert_eq!(s.cancelled, planned, "{s:?}");
    assert_eq!(s.succeeded, n - planned, "{s:?}");
    assert_eq!(s.failed, 0, "{s:?}");
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    let records = run.records.as_ref().expect("--detailed");
    for r in records {
        let want = plan
            .for_request(r.index)
            .map(|_| RequestErrorKind::Cancelled);
        assert_eq!(r.error, want, "request {}", r.index);
    }
    // The server finished exactly the others. It saw every first-token cancellation end
    // early (noticed at its next write, so allow a moment); a time-based one may have been
    // cut before its request reached the handler.
    let at_first_token = (0..n)
        .filter(|&i| plan.for_request(i) == Some(CancelAt::FirstToken))
        .count();
    assert!(
        at_first_token > 0 && at_first_token < planned,
        "{at_first_token}"
    );
    for _ in 0..100 {
        if seen.dropped_early.load(Ordering::SeqCst) >= at_first_token {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.finished.load(Ordering::SeqCst), n - planned);
    let dropped = seen.dropped_early.load(Ordering::SeqCst);
    assert!(
        (at_first_token..=planned).contains(&dropped),
        "{dropped} dropped, {at_first_token} at the first token, {planned} planned"
    );
    let methods = seen.methods.lock().unwrap().clone();
    assert!(methods.values().sum::<usize>() <= n, "{methods:?}");
    assert_eq!(
        methods.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["a3", "cacheblend", "full"]
    );
    assert!(run.label.starts_with("mix"), "{}", run.label);
}
