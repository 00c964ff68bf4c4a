//! One generation request from validation to the first engine event: drain and concurrency
//! checks, stored-document lookups (404 early), submit, and the wait for the first event so
//! that failures before the first token still get their own HTTP status.

use std::time::Instant;

use a3kv_sched::EngineEvent;
use tokio::sync::mpsc::Receiver;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout_at;

use crate::error::ApiError;
use crate::logprobs::LogprobsOut;
use crate::openai::ValidRequest;
use crate::reply::ReplyMeta;
use crate::state::AppState;

/// A request the engine accepted, with its first event.
pub struct Admitted {
    /// Remaining events; dropping it cancels the request in the engine.
    pub rx: Receiver<EngineEvent>,
    /// The first event (a token, or `Finished` for an empty generation).
    pub first: EngineEvent,
    /// The concurrency permit, released when the response ends (RAII).
    pub permit: OwnedSemaphorePermit,
    /// Whole-request deadline.
    pub deadline: tokio::time::Instant,
    /// When the handler started.
    pub started: Instant,
    /// Response identity.
    pub meta: ReplyMeta,
    /// Final usage chunk when streaming.
    pub include_usage: bool,
    /// For logs.
    pub request_id: String,
}

/// Runs the edge checks, submits, and waits for the first event.
pub async fn admit(
    state: &AppState,
    valid: ValidRequest,
    meta: ReplyMeta,
) -> Result<Admitted, ApiError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + state.request_timeout;
    let edge = async {
        state.check_accepting()?;
        let permit = state.concurrency.clone().try_acquire_owned().map_err(|_| {
            ApiError::TooManyRequests {
                retry_after_secs: state.retry_after_secs,
            }
        })?;
        for id in &valid.document_ids {
            state.engine.get_chunk(id).await.map_err(ApiError::from)?;
        }
        Ok::<_, ApiError>(permit)
    };
    let permit = match edge.await {
        Ok(p) => p,
        Err(e) => {
            crate::metrics::record_rejected(e.reason());
            return Err(e);
        }
    };
    let request_id = valid.generate.request_id.clone();
    let mut rx = state.engine.submit(valid.generate)?;
    let first = match timeout_at(deadline, rx.recv()).await {
        Err(_) => {
            return Err(ApiError::Timeout {
                secs: state.request_timeout.as_secs(),
            })
        }
        Ok(None) => {
            return Err(ApiError::Internal(
                "the engine closed the request stream".into(),
            ))
        }
        Ok(Some(EngineEvent::Failed(e))) => return Err(e.into()),
        Ok(Some(ev)) => ev,
    };
    Ok(Admitted {
        rx,
        first,
        permit,
        deadline,
        started,
        meta,
        include_usage: valid.include_usage,
        request_id,
    })
}

/// Collects a whole generation (non-streaming).
pub async fn collect(mut a: Admitted, timeout_secs: u64) -> Result<serde_json::Value, ApiError> {
    let mut text = String::new();
    let mut logprobs = LogprobsOut::new(&a.meta);
    let mut ev = Some(a.first);
    loop {
        let event = match ev.take() {
            Some(e) => e,
            None => match timeout_at(a.deadline, a.rx.recv()).await {
                Err(_) => return Err(ApiError::Timeout { secs: timeout_secs }),
                Ok(None) => {
                    return Err(ApiError::Internal(
                        "the engine closed the request stream".into(),
                    ))
                }
                Ok(Some(e)) => e,
            },
        };
        match event {
            EngineEvent::Token {
                text: t,
                logprobs: lp,
                ..
            } => {
                logprobs.push(&t, lp);
                text.push_str(&t);
            }
            EngineEvent::Failed(e) => return Err(e.into()),
            EngineEvent::Finished {
                finish_reason,
                usage,
            } => {
                let usage_out = (&usage).into();
                log_finished(&a.request_id, &finish_reason, &usage, a.started);
                drop(a.permit);
                let lp = logprobs.take();
                return Ok(a.meta.full(&text, &finish_reason, &usage_out, lp));
            }
        }
    }
}

/// The one log line of a finished generation.
pub fn log_finished(
    request_id: &str,
    finish_reason: &str,
    usage: &a3kv_sched::Usage,
    started: Instant,
) {
    tracing::info!(
        request_id,
        finish_reason,
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        ttft_secs = usage.ttft_secs,
        e2e_secs = started.elapsed().as_secs_f64(),
        method = usage
            .fusion
            .as_ref()
            .map(|f| f.method.as_str())
            .unwrap_or("none"),
        "generation finished"
    );
}
