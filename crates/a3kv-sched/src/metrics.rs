//! Every metric the engine records (docs/design.md §7): names, descriptions and histogram
//! buckets live here; the values are recorded where the work happens (queue depth by
//! Admission, load time by ChunkLoader, TTFT when the first token is sent by the Decoder).
//!
//! The HTTP server installs the Prometheus exporter with [`histogram_buckets`] and calls
//! [`describe_metrics`] once at start. Labels are small enums, never request ids.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// `a3kv:time_to_first_token_seconds` — submit to first token sent.
pub const TTFT: &str = "a3kv:time_to_first_token_seconds";
/// `a3kv:inter_token_latency_seconds` — between two tokens of one request.
pub const ITL: &str = "a3kv:inter_token_latency_seconds";
/// `a3kv:e2e_request_latency_seconds` — submit to finish.
pub const E2E: &str = "a3kv:e2e_request_latency_seconds";
/// `a3kv:request_queue_time_seconds` — submit to admission into the running set.
pub const QUEUE_TIME: &str = "a3kv:request_queue_time_seconds";
/// `a3kv:request_prefill_time_seconds` — admission to fused cache ready.
pub const PREFILL_TIME: &str = "a3kv:request_prefill_time_seconds";
/// `a3kv:request_decode_time_seconds` — first token to finish.
pub const DECODE_TIME: &str = "a3kv:request_decode_time_seconds";
/// `a3kv:chunk_load_seconds{tier}` — one chunk's layers fetched (`tier` = memory | disk | computed).
pub const CHUNK_LOAD: &str = "a3kv:chunk_load_seconds";
/// `a3kv:fusion_selection_seconds` — exact layers, check layer and selection of one request.
pub const SELECTION_TIME: &str = "a3kv:fusion_selection_seconds";
/// `a3kv:fusion_recompute_ratio{method}` — recomputed / document rows, per request.
pub const RECOMPUTE_RATIO: &str = "a3kv:fusion_recompute_ratio";
/// `a3kv:fusion_recompute_ratio_chosen{method}` — the ratio an adaptive budget
/// (`recompute_ratio: "auto"`) chose, `k / (T−Q)`, per request that had one.
pub const RECOMPUTE_RATIO_CHOSEN: &str = "a3kv:fusion_recompute_ratio_chosen";
/// `a3kv:fusion_tokens_total{kind=reused|recomputed|fresh}`.
pub const FUSION_TOKENS: &str = "a3kv:fusion_tokens_total";
/// `a3kv:chunk_lookups_total{tier=memory|disk|remote, result=hit|miss|error}` — one per tier
/// consulted (recorded by the store).
pub const CHUNK_LOOKUPS: &str = a3kv_store::CHUNK_LOOKUPS;
/// `a3kv:remote_get_seconds` — one Redis GET (a chunk header or one layer).
pub const REMOTE_GET: &str = a3kv_store::REMOTE_GET_SECONDS;
/// `a3kv:remote_put_seconds` — one chunk written to Redis.
pub const REMOTE_PUT: &str = a3kv_store::REMOTE_PUT_SECONDS;
/// `a3kv:remote_errors_total{op}` — Redis calls that failed or timed out.
pub const REMOTE_ERRORS: &str = a3kv_store::REMOTE_ERRORS;
/// `a3kv:remote_breaker_open` — 1 while the remote tier's circuit breaker skips Redis.
pub const REMOTE_BREAKER_OPEN: &str = a3kv_store::REMOTE_BREAKER_OPEN;
/// `a3kv:chunk_cache_bytes{tier}` — bytes held by each store tier.
pub const CHUNK_CACHE_BYTES: &str = "a3kv:chunk_cache_bytes";
/// `a3kv:chunk_evictions_total{tier}`.
pub const CHUNK_EVICTIONS: &str = "a3kv:chunk_evictions_total";
/// Counter, label `tier`: stored chunks found corrupt (bad checksum, size or header) and
/// treated as a miss.
pub const CHUNK_CORRUPT: &str = "a3kv:chunk_corrupt_total";
/// `a3kv:fusion_gate_state` — the start-up fusion gate: 1 passed, 0 failed (fused requests
/// run as full prefill), -1 disabled.
pub const FUSION_GATE_STATE: &str = "a3kv:fusion_gate_state";
/// `a3kv:fusion_shadow_kl` — first-token KL(full ‖ fused) of a production shadow prefill.
pub const SHADOW_KL: &str = "a3kv:fusion_shadow_kl";
/// `a3kv:fusion_shadow_agreement_total{agree=true|false}` — shadows whose first token
/// (argmax) equals the fused request's.
pub const SHADOW_AGREEMENT: &str = "a3kv:fusion_shadow_agreement_total";
/// `a3kv:fusion_shadow_dropped_total{reason=queue_full|error}` — sampled requests whose
/// shadow did not run (too many in flight) or failed.
pub const SHADOW_DROPPED: &str = "a3kv:fusion_shadow_dropped_total";
/// `a3kv:fusion_shadow_ratio_step` — the shadow controller's step: the default recompute
/// ratio is raised by `step · engine.fusion_shadow.ratio_step`.
pub const SHADOW_RATIO_STEP: &str = "a3kv:fusion_shadow_ratio_step";
/// `a3kv:num_requests_running`.
pub const RUNNING: &str = "a3kv:num_requests_running";
/// `a3kv:num_requests_waiting`.
pub const WAITING: &str = "a3kv:num_requests_waiting";
/// `a3kv:prompt_tokens_total`.
pub const PROMPT_TOKENS: &str = "a3kv:prompt_tokens_total";
/// `a3kv:generation_tokens_total`.
pub const GENERATION_TOKENS: &str = "a3kv:generation_tokens_total";
/// `a3kv:request_success_total{finished_reason=stop|length}`.
pub const REQUEST_SUCCESS: &str = "a3kv:request_success_total";
/// `a3kv:requests_rejected_total{reason}` — refused at submit (queue full, bad input..).
pub const REQUESTS_REJECTED: &str = "a3kv:requests_rejected_total";
/// `a3kv:request_failure_total{err}` — failed after admission: `err` = [`crate::EngineError::kind`]
/// for engine failures; the HTTP server adds `timeout`, `shutting_down` (cut by the drain
/// deadline) and `client_gone` (the client disconnected).
pub const REQUEST_FAILURE: &str = "a3kv:request_failure_total";
/// `a3kv:recompute_batch_tokens` — selected rows per recompute batch.
pub const BATCH_TOKENS: &str = "a3kv:recompute_batch_tokens";
/// `a3kv:recompute_batch_requests` — requests per recompute batch.
pub const BATCH_REQUESTS: &str = "a3kv:recompute_batch_requests";
/// `a3kv:decode_batch_size` — sequences per decode step.
pub const DECODE_BATCH: &str = "a3kv:decode_batch_size";
/// `a3kv:actor_restarts_total{actor}` — supervised restarts after a failure.
pub const ACTOR_RESTARTS: &str = "a3kv:actor_restarts_total";

/// Latency buckets (seconds); include 2 s (docs/design.md §7).
pub const LATENCY_BUCKETS_SECS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
    3.0, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
/// Buckets for single remote-tier calls (seconds): a loopback GET of one layer takes well
/// under a millisecond.
pub const REMOTE_BUCKETS_SECS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Ratio buckets in [0, 1].
pub const RATIO_BUCKETS: &[f64] = &[
    0.0, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
];
/// KL buckets (nats) of the shadow histogram.
pub const KL_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0,
];
/// Size buckets (tokens / sequences per batch).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
];

/// Bucket boundaries per histogram name, for
/// `PrometheusBuilder::set_buckets_for_metric(Matcher::Full(name), buckets)`.
pub fn histogram_buckets() -> Vec<(&'static str, &'static [f64])> {
    let mut v: Vec<(&'static str, &'static [f64])> = [
        TTFT,
        ITL,
        E2E,
        QUEUE_TIME,
        PREFILL_TIME,
        DECODE_TIME,
        CHUNK_LOAD,
        SELECTION_TIME,
    ]
    .into_iter()
    .map(|n| (n, LATENCY_BUCKETS_SECS))
    .collect();
    v.push((RECOMPUTE_RATIO, RATIO_BUCKETS));
    v.push((RECOMPUTE_RATIO_CHOSEN, RATIO_BUCKETS));
    v.push((SHADOW_KL, KL_BUCKETS));
    v.push((REMOTE_GET, REMOTE_BUCKETS_SECS));
    v.push((REMOTE_PUT, REMOTE_BUCKETS_SECS));
    for n in [BATCH_TOKENS, BATCH_REQUESTS, DECODE_BATCH] {
        v.push((n, SIZE_BUCKETS));
    }
    v
}

/// Registers units and help texts of every metric with the installed recorder.
pub fn describe_metrics() {
    let s = Unit::Seconds;
    describe_histogram!(TTFT, s, "Time from submit to the first token sent.");
    describe_histogram!(ITL, s, "Time between consecutive tokens of a request.");
    describe_histogram!(E2E, s, "Time from submit to the end of the request.");
    describe_histogram!(QUEUE_TIME, s, "Time a request waited before running.");
    describe_histogram!(
        PREFILL_TIME,
        s,
        "Time from admission to the fused KV cache ready."
    );
    describe_histogram!(DECODE_TIME, s, "Time from the first token to the last.");
    describe_histogram!(CHUNK_LOAD, s, "Time to fetch one chunk's KV, by tier.");
    describe_histogram!(
        SELECTION_TIME,
        s,
        "Exact layers + check layer + selection time."
    );
    describe_histogram!(
        RECOMPUTE_RATIO,
        "Recomputed / document rows per request, by method."
    );
    describe_histogram!(
        RECOMPUTE_RATIO_CHOSEN,
        "Recompute ratio an adaptive budget (recompute_ratio \"auto\") chose, k / (T - Q), by method."
    );
    describe_counter!(
        FUSION_TOKENS,
        "Prompt tokens by kind: reused, recomputed, fresh."
    );
    describe_counter!(
        CHUNK_LOOKUPS,
        "Chunk lookups per store tier consulted (memory, disk, remote), by result: hit, miss, or error (the tier could not be asked)."
    );
    describe_histogram!(
        REMOTE_GET,
        Unit::Seconds,
        "One Redis GET of the remote chunk tier (a header or one layer)."
    );
    describe_histogram!(
        REMOTE_PUT,
        Unit::Seconds,
        "One chunk written to the remote tier (layers, then header)."
    );
    describe_counter!(
        REMOTE_ERRORS,
        "Remote tier (Redis) calls that failed or timed out, by operation; the request went on locally."
    );
    describe_gauge!(
        REMOTE_BREAKER_OPEN,
        "1 while the remote tier's circuit breaker skips Redis after repeated failures."
    );
    describe_gauge!(
        CHUNK_CACHE_BYTES,
        Unit::Bytes,
        "Bytes held by each chunk store tier."
    );
    describe_counter!(CHUNK_EVICTIONS, "Chunks evicted from each store tier.");
    describe_counter!(
        CHUNK_CORRUPT,
        "Stored chunks found corrupt (checksum, size, header) and recomputed, by tier."
    );
    describe_gauge!(
        FUSION_GATE_STATE,
        "Start-up fusion gate: 1 passed, 0 failed (fused requests served as full prefill), -1 disabled."
    );
    describe_histogram!(
        SHADOW_KL,
        "First-token KL(full || fused) of production shadow prefills (nats)."
    );
    describe_counter!(
        SHADOW_AGREEMENT,
        "Production shadow prefills by whether the first token (argmax) equals the fused request's."
    );
    describe_counter!(
        SHADOW_DROPPED,
        "Sampled requests whose shadow prefill did not run: queue_full (too many in flight) or error."
    );
    describe_gauge!(
        SHADOW_RATIO_STEP,
        "Shadow controller step: the default recompute ratio is raised by step x ratio_step."
    );
    describe_gauge!(RUNNING, "Requests in prefill or decode.");
    describe_gauge!(WAITING, "Requests admitted but not yet running.");
    describe_counter!(PROMPT_TOKENS, "Prompt tokens of started requests.");
    describe_counter!(GENERATION_TOKENS, "Generated tokens.");
    describe_counter!(REQUEST_SUCCESS, "Finished requests by finish reason.");
    describe_counter!(REQUESTS_REJECTED, "Requests refused at submit, by reason.");
    describe_counter!(
        REQUEST_FAILURE,
        "Requests failed after submit: engine error kind, timeout, shutting_down or client_gone."
    );
    describe_histogram!(BATCH_TOKENS, "Selected rows per recompute batch.");
    describe_histogram!(BATCH_REQUESTS, "Requests per recompute batch.");
    describe_histogram!(DECODE_BATCH, "Sequences per decode step.");
    describe_counter!(ACTOR_RESTARTS, "Actor restarts after a failure, by actor.");
}

/// The `method` label for a method name (a closed set, never free text).
pub fn method_label(method: &str) -> &'static str {
    a3kv_fusion::Method::all()
        .find(|m| m.as_str() == method)
        .map_or("other", |m| m.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_histogram_has_buckets_including_two_seconds() {
        let b = histogram_buckets();
        assert_eq!(b.len(), 16);
        assert!(b.contains(&(REMOTE_GET, REMOTE_BUCKETS_SECS)));
        assert!(b
            .iter()
            .filter(|(_, v)| *v == LATENCY_BUCKETS_SECS)
            .all(|(_, v)| v.contains(&2.0)));
        assert!(b.iter().all(|(_, v)| v.windows(2).all(|w| w[0] < w[1])));
        describe_metrics(); // no recorder: a no-op that must not panic
    }
}
