//! `--precompute`: before the trace runs, stores every pool document on the server through
//! the a3kv chunk API (`PUT /v1/chunks`, in batches), so the measured run sees warm chunks —
//! the steady state of a RAG deployment whose corpus is indexed ahead of queries.
//!
//! With `--route-header`, each document goes in its own `PUT` carrying its id as the routing
//! key ([`crate::route`]), so a chunk-aware gateway stores it on the replica that requests
//! citing it first are routed to.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::route::RouteHeader;
use crate::workload::Workload;
use crate::LoadgenError;

/// Documents per `PUT /v1/chunks` (the server's default `engine.max_documents` is 32).
pub const BATCH: usize = 8;

/// What `--precompute` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrecomputeReport {
    /// Documents stored.
    pub documents: usize,
    /// Wall time of all `PUT`s, seconds.
    pub secs: f64,
}

/// PUTs the pool to `url` (the server's `/v1/chunks`), [`BATCH`] documents at a time, or one
/// at a time with its routing header when `route` is set. Any non-2xx reply stops the run with
/// the server's message: a run on a half-stored pool would measure the wrong thing.
pub async fn precompute_pool(
    url: &str,
    workload: &Workload,
    timeout: Duration,
    route: Option<&RouteHeader>,
) -> Result<PrecomputeReport, LoadgenError> {
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    let t0 = Instant::now();
    let docs = workload.docs();
    let batch_size = if route.is_some() { 1 } else { BATCH };
    for (b, batch) in docs.chunks(batch_size).enumerate() {
        let body = json!({
            "documents": batch
                .iter()
                .map(|d| json!({"id": d.id, "text": d.text}))
                .collect::<Vec<_>>(),
        });
        let fail = |message: String| LoadgenError::Precompute {
            url: url.to_string(),
            message: format!(
                "documents {}..{}: {message}",
                b * batch_size,
                b * batch_size + batch.len()
            ),
        };
        let mut put = http.put(url).json(&body);
        if let (Some(route), [doc]) = (route, batch) {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&doc.id) {
                put = put.header(route.name().clone(), value);
            }
        }
        let resp = put.send().await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(fail(format!("HTTP {status}: {}", text.trim())));
        }
    }
    Ok(PrecomputeReport {
        documents: docs.len(),
        secs: t0.elapsed().as_secs_f64(),
    })
}
