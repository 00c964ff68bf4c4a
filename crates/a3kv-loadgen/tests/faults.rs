//! Against a fault-injecting server on 127.0.0.1:0 (429 with Retry-After, 503 error JSON,
//! a connection cut mid-stream, a stream without `[DONE]`, an error event mid-stream, garbage,
//! a reply that never comes), errors are counted by kind and runs end on time.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use common::{args, data, serve, sse};
use serde_json::json;

const FAULTS: usize = 8;

fn error_json(status: StatusCode, retry_after: bool) -> Response {
    let body = json!({"error": {"message": "overloaded", "type": "overloaded_error", "code": status.as_u16()}});
    let mut resp = (status, axum::Json(body)).into_response();
    if retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, "1".parse().unwrap());
    }
    resp
}

fn content(i: usize) -> String {
    data(&json!({"choices":[{"delta":{"content": format!("x{i}")}}]}))
}

/// Request `n` gets fault `n % FAULTS`.
async fn faulty(counter: Arc<AtomicUsize>) -> Response {
    match counter.fetch_add(1, Ordering::SeqCst) % FAULTS {
        0 => error_json(StatusCode::TOO_MANY_REQUESTS, true),
        1 => error_json(StatusCode::SERVICE_UNAVAILABLE, true),
        2 => {
            // Headers and one token, then the connection is cut.
            let s = futures::stream::iter(vec![
                Ok(Bytes::from(content(0))),
                Err(std::io::Error::other("cut")),
            ]);
            sse(Body::from_stream(s))
        }
        3 => sse(Body::from(content(0))), // ends cleanly but without [DONE]
        4 => sse(Body::from(format!(
            "{}{}",
            content(0),
            data(&json!({"error": {"message": "oom", "type": "server_error", "code": 500}}))
        ))),
        5 => sse(Body::from("data: {not json\n\n")),
        6 => {
            // Never answers: the per-request timeout must fire.
            tokio::time::sleep(Duration::from_secs(30)).await;
            error_json(StatusCode::OK, false)
        }
        _ => sse(Body::from(format!(
            "{}{}data: [DONE]\n\n",
            content(0),
            content(1)
        ))),
    }
}

#[tokio::test]
async fn errors_are_counted_by_kind() {
    let counter = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&counter);
    let target =
        serve(Router::new().route("/v1/chat/completions", post(move || faulty(Arc::clone(&c)))))
            .await;
    let a = args(
        &target,
        &[
            "--arrival",
            "closed",
            "--concurrency",
            "1",
            "--num-requests",
            "16",
            "--request-timeout-secs",
            "0.4",
            "--drain-secs",
            "2",
            "--doc-words",
            "5",
            "--num-docs",
            "10",
        ],
    );
    let t0 = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(10), a3kv_loadgen::run(a))
        .await
        .unwrap()
        .unwrap();
    let s = &report.runs[0].summary;
    assert!(
        t0.elapsed() < Duration::from_secs(6),
        "two 0.4 s timeouts plus fast replies"
    );
    assert_eq!(
        (s.sent, s.succeeded, s.failed),
        (16, 2, 14),
        "{:?}",
        s.errors
    );
    for kind in [
        "http_429",
        "http_5xx",
        "stream_error",
        "bad_response",
        "timeout",
    ] {
        assert_eq!(s.errors.get(kind), Some(&2), "{kind}: {:?}", s.errors);
    }
    assert_eq!(
        s.errors.get("stream_broken"),
        Some(&4),
        "cut + no [DONE]: {:?}",
        s.errors
    );
    assert_eq!(s.output_tokens_total, 4, "only successes count tokens");
    assert!(report.render().contains("http_429: 2"));
}

#[tokio::test]
async fn hung_server_run_ends_at_duration_plus_drain() {
    let target = serve(Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK
        }),
    ))
    .await;
    let a = args(
        &target,
        &[
            "--rate",
            "20",
            "--duration-secs",
            "1",
            "--drain-secs",
            "0.5",
            "--request-timeout-secs",
            "30",
        ],
    );
    let t0 = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(10), a3kv_loadgen::run(a))
        .await
        .unwrap()
        .unwrap();
    let elapsed = t0.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "ran {elapsed:?}, bound is 1 s + 0.5 s drain"
    );
    let s = &report.runs[0].summary;
    assert!(s.sent > 5, "{s:?}");
    assert_eq!(s.errors.get("aborted"), Some(&s.sent), "{:?}", s.errors);
}

#[tokio::test]
async fn connection_refused_and_dropped_connections() {
    // A port with nothing listening: connect errors.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let a = args(
        &dead,
        &[
            "--arrival",
            "closed",
            "--concurrency",
            "2",
            "--num-requests",
            "4",
        ],
    );
    let report = tokio::time::timeout(Duration::from_secs(10), a3kv_loadgen::run(a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.runs[0].summary.errors.get("connect"), Some(&4));

    // A server that accepts and closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            drop(sock);
        }
    });
    let a = args(
        &rude,
        &[
            "--arrival",
            "closed",
            "--concurrency",
            "2",
            "--num-requests",
            "4",
        ],
    );
    let report = tokio::time::timeout(Duration::from_secs(10), a3kv_loadgen::run(a))
        .await
        .unwrap()
        .unwrap();
    let s = &report.runs[0].summary;
    assert_eq!(
        (s.failed, s.errors.get("stream_broken")),
        (4, Some(&4)),
        "{:?}",
        s.errors
    );
}
