//! Test servers on 127.0.0.1:0 and helpers shared by the integration tests: a well-behaved
//! SSE chat server that records request bodies, and command-line parsing into `LoadgenArgs`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use a3kv_loadgen::LoadgenArgs;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use futures::StreamExt;
use serde_json::{json, Value};

/// Bodies received, in arrival order.
pub type Received = Arc<Mutex<Vec<Value>>>;

/// Serves `router` on an ephemeral localhost port; returns its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// Parses loadgen flags (`--target` first) the way the `a3kv` binary would.
pub fn args(target: &str, extra: &[&str]) -> LoadgenArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }
    let mut argv = vec![
        "a3kv-loadgen",
        "--target",
        target,
        "--no-progress",
        "--synthetic-text",
        "--model",
        "stub",
    ];
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().args
}

/// How the well-behaved server streams.
#[derive(Clone, Copy)]
pub struct Script {
    /// Delay before the first content token (after an immediate empty role chunk).
    pub first_token_delay: Duration,
    /// Delay between content tokens.
    pub token_gap: Duration,
    /// Content chunks per response.
    pub tokens: usize,
}

/// An SSE chunk line.
pub fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// An OpenAI-style streamed response following `script`; the usage chunk echoes the request's
/// fusion method (reused/recomputed tokens made up from the number of documents).
pub fn stream_response(script: Script, body: &Value) -> Response {
    let method = body["fusion"]["method"].clone();
    let n_docs = body["documents"].as_array().map_or(0, Vec::len) as u64;
    let mut events: Vec<(Duration, String)> = vec![(
        Duration::ZERO,
        data(&json!({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})),
    )];
    for i in 0..script.tokens {
        let delay = if i == 0 {
            script.first_token_delay
        } else {
            script.token_gap
        };
        events.push((
            delay,
            data(&json!({"choices":[{"index":0,"delta":{"content":format!("t{i} ")}}]})),
        ));
    }
    events.push((
        Duration::ZERO,
        data(&json!({"choices":[],"usage":{
            "prompt_tokens": 100 + n_docs, "completion_tokens": script.tokens,
            "fusion": {"reused_tokens": 85 * n_docs, "recomputed_tokens": 15 * n_docs,
                       "recompute_ratio": 0.15, "method": method}}})),
    ));
    events.push((Duration::ZERO, "data: [DONE]\n\n".to_string()));
    let stream = futures::stream::iter(events).then(|(delay, text)| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, Infallible>(Bytes::from(text))
    });
    sse(Body::from_stream(stream))
}

/// A 200 `text/event-stream` response with `body`.
pub fn sse(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(body)
        .unwrap()
}

/// The well-behaved chat server: records each body, then streams per `script`.
pub fn chat_router(script: Script, received: Received) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(|State((script, received)): State<(Script, Received)>, Json(body): Json<Value>| async move {
                received.lock().unwrap().push(body.clone());
                stream_response(script, &body).into_response()
            }),
        )
        .with_state((script, received))
}
