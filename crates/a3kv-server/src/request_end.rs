//! How each admitted generation request ended, logged once and counted by cause, however it
//! ends: finished, failed in the engine (counted there), timed out, cut by the drain deadline,
//! or abandoned by its client (the handler or its stream dropped before the end).

use std::time::Instant;

use crate::error::ApiError;

/// `a3kv:request_failure_total` (the engine counts its own failures under the same name).
const REQUEST_FAILURE: &str = "a3kv:request_failure_total";

/// The end of one admitted request. Dropped without [`RequestEnd::finished`] or
/// [`RequestEnd::failed`], the client went away: counted as `client_gone` and logged.
#[derive(Debug)]
pub struct RequestEnd {
    request_id: String,
    started: Instant,
    /// Tokens sent so far (for the log line of an abandoned request).
    pub tokens_sent: usize,
    ended: bool,
}

impl RequestEnd {
    /// A request admitted now (its handler started at `started`).
    pub fn new(request_id: String, started: Instant) -> Self {
        Self {
            request_id,
            started,
            tokens_sent: 0,
            ended: false,
        }
    }

    /// The request finished normally.
    pub fn finished(&mut self, finish_reason: &str, usage: &a3kv_sched::Usage) {
        self.ended = true;
        tracing::info!(
            request_id = self.request_id,
            finish_reason,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            ttft_secs = usage.ttft_secs,
            e2e_secs = self.started.elapsed().as_secs_f64(),
            method = usage
                .fusion
                .as_ref()
                .map(|f| f.method.as_str())
                .unwrap_or("none"),
            "generation finished"
        );
    }

    /// The request ended with `e` (its response, or a final SSE error event, carries it).
    /// Failures the server decides (timeout, drain deadline) are counted here; the engine has
    /// already counted its own.
    pub fn failed(&mut self, e: &ApiError) {
        self.ended = true;
        if let Some(label) = server_failure_label(e) {
            metrics::counter!(REQUEST_FAILURE, "err" => label).increment(1);
        }
        let e2e_secs = self.started.elapsed().as_secs_f64();
        if matches!(e, ApiError::Internal(_)) {
            tracing::error!(request_id = self.request_id, error = %e, code = e.reason(), e2e_secs, tokens_sent = self.tokens_sent, "generation failed");
        } else {
            tracing::warn!(request_id = self.request_id, error = %e, code = e.reason(), e2e_secs, tokens_sent = self.tokens_sent, "generation failed");
        }
    }
}

impl Drop for RequestEnd {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        metrics::counter!(REQUEST_FAILURE, "err" => "client_gone").increment(1);
        tracing::info!(
            request_id = self.request_id,
            e2e_secs = self.started.elapsed().as_secs_f64(),
            tokens_sent = self.tokens_sent,
            "generation cancelled: the client went away"
        );
    }
}

/// The failure label of an error the server itself decided, `None` for engine failures.
fn server_failure_label(e: &ApiError) -> Option<&'static str> {
    match e {
        ApiError::Timeout { .. } => Some("timeout"),
        ApiError::ShuttingDown { .. } => Some("shutting_down"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_server_decided_failures_get_a_server_label() {
        assert_eq!(
            server_failure_label(&ApiError::Timeout { secs: 1 }),
            Some("timeout")
        );
        assert_eq!(
            server_failure_label(&ApiError::ShuttingDown {
                reason: "x",
                retry_after_secs: 1
            }),
            Some("shutting_down")
        );
        assert_eq!(server_failure_label(&ApiError::Internal("x".into())), None);
    }
}
