//! The Prometheus recorder: installed once per process with the configured buckets (names,
//! help texts and default buckets are the engine's, in `a3kv_sched::metrics`), plus the
//! few HTTP-level recordings the server owns (rejections before a request reaches the engine).

use std::sync::Mutex;

use a3kv_sched::metrics as names;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::MetricsSection;
use crate::error::ServeError;

/// The handle of the process-wide recorder. The `metrics` facade has exactly one global
/// recorder per process, so a second server in the same process (tests) shares it.
static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the recorder (first call) or returns the installed one's handle.
pub fn install(cfg: &MetricsSection) -> Result<PrometheusHandle, ServeError> {
    let mut slot = HANDLE
        .lock()
        .map_err(|_| ServeError::Metrics("recorder lock poisoned".into()))?;
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for (name, default) in names::histogram_buckets() {
        let buckets: &[f64] = if default == names::LATENCY_BUCKETS_SECS {
            &cfg.latency_buckets_secs
        } else if default == names::RATIO_BUCKETS {
            &cfg.ratio_buckets
        } else if default == names::REMOTE_BUCKETS_SECS || default == names::KL_BUCKETS {
            // Single Redis calls (sub-millisecond resolution) and shadow KLs (nats): not
            // configurable.
            default
        } else {
            &cfg.size_buckets
        };
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
            .map_err(|e| ServeError::Metrics(e.to_string()))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    names::describe_metrics();
    // Zero-valued series so dashboards and alerts see every metric from the first scrape.
    metrics::gauge!(names::RUNNING).set(0.0);
    metrics::gauge!(names::WAITING).set(0.0);
    // The shared tier's series exist on every replica (zero without Redis), so the fleet
    // dashboard row and alerts see them before the first call or error.
    metrics::gauge!(names::REMOTE_BREAKER_OPEN).set(0.0);
    for op in ["get", "put", "lease", "delete", "connect"] {
        metrics::counter!(names::REMOTE_ERRORS, "op" => op).absolute(0);
    }
    for tier in ["memory", "disk", "remote"] {
        for result in ["hit", "miss", "error"] {
            metrics::counter!(names::CHUNK_LOOKUPS, "tier" => tier, "result" => result).absolute(0);
        }
    }
    // Shadow sampling runs on a small share of requests: its series exist from the start.
    metrics::gauge!(names::SHADOW_RATIO_STEP).set(0.0);
    for agree in ["true", "false"] {
        metrics::counter!(names::SHADOW_AGREEMENT, "agree" => agree).absolute(0);
    }
    for reason in ["queue_full", "error"] {
        metrics::counter!(names::SHADOW_DROPPED, "reason" => reason).absolute(0);
    }
    for h in [
        names::REMOTE_GET,
        names::REMOTE_PUT,
        names::SHADOW_KL,
        names::RECOMPUTE_RATIO_CHOSEN,
    ] {
        // Registering the histogram renders its (empty) buckets.
        let _ = metrics::histogram!(h);
    }
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Counts a request refused by the server before it reached the engine.
pub fn record_rejected(reason: &'static str) {
    metrics::counter!(names::REQUESTS_REJECTED, "reason" => reason).increment(1);
}
