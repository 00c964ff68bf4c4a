//! Shared, read-mostly state of the HTTP handlers: the engine handle, the edge limits,
//! the concurrency semaphore, the draining flag and the metrics handle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use a3kv_sched::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::openai::EdgeLimits;

/// Handler state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// Limits checked at the edge.
    pub limits: Arc<EdgeLimits>,
    /// One permit per generation request in flight (`limits.max_concurrent_requests`).
    pub concurrency: Arc<Semaphore>,
    /// Set on SIGTERM/SIGINT: new generation requests get 503.
    pub draining: Arc<AtomicBool>,
    /// Turns `true` when `shutdown.drain_secs` has passed: requests still running are cut
    /// with 503 `shutting_down` (a final SSE error event when streaming).
    pub drain_deadline: tokio::sync::watch::Receiver<bool>,
    /// Renders `/metrics`.
    pub prometheus: PrometheusHandle,
    /// `limits.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `limits.request_timeout_secs`.
    pub request_timeout: Duration,
    /// `limits.retry_after_secs`.
    pub retry_after_secs: u64,
    /// Unix time the model was loaded (`created` of `/v1/models`).
    pub created_unix: u64,
    /// Request id generator.
    pub ids: Arc<crate::request_id::RequestIds>,
}

impl AppState {
    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Resolves once the drain deadline has passed (never, while the server runs).
    pub async fn drain_deadline_passed(&self) {
        wait_deadline(self.drain_deadline.clone()).await;
    }

    /// 503 while draining.
    pub fn check_accepting(&self) -> Result<(), ApiError> {
        if self.is_draining() {
            return Err(ApiError::ShuttingDown {
                reason: "the server is shutting down",
                retry_after_secs: self.retry_after_secs,
            });
        }
        if !self.engine.is_ready() {
            return Err(ApiError::Unavailable {
                reason: "the engine is not ready",
                retry_after_secs: self.retry_after_secs,
            });
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Resolves when `rx` turns `true`; never if its sender is gone without firing.
pub async fn wait_deadline(mut rx: tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|passed| *passed).await.is_err() {
        std::future::pending::<()>().await;
    }
}
