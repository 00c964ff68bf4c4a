//! Request ids and the per-request log span: every request gets an id (the client's
//! `x-request-id` when it is short and plain, else `<process prefix>-<counter>`), echoed in
//! the `x-request-id` response header, carried into the engine request and every log line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::state::AppState;

/// The id of the current request (a request extension).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Generates ids unique within the process and, via the prefix, across restarts.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            prefix: format!("{:x}{:x}", nanos & 0xffff_ffff, std::process::id()),
            next: AtomicU64::new(1),
        }
    }
}

impl RequestIds {
    /// The next id.
    pub fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

fn client_id(req: &Request) -> Option<String> {
    let v = req.headers().get("x-request-id")?.to_str().ok()?;
    let plain = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    plain.then(|| v.to_string())
}

/// Middleware: assigns the id, runs the request inside a span, logs the response line.
pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = client_id(&req).unwrap_or_else(|| state.ids.next_id());
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1e3,
            "response"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}
