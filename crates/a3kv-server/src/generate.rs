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
use crate::request_end::RequestEnd;
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
    /// Response identity.
    pub meta: ReplyMeta,
    /// Final usage chunk when streaming.
    pub include_usage: bool,
    /// How the request ends (logged and counted once, however it ends).
    pub end: RequestEnd,
    /// The server's drain deadline (see [`AppState::drain_deadline`]).
    pub drain_deadline: tokio::sync::watch::Receiver<bool>,
}

impl Admitted {
    /// The next engine event, or why there is none: the request's own deadline passed, the
    /// server's drain deadline cut it, or the engine closed the stream.
    /// An error is recorded in [`Admitted::end`].
    pub async fn next_event(&mut self, timeout_secs: u64) -> Result<EngineEvent, ApiError> {
        let r = next_event(
            &mut self.rx,
            self.deadline,
            timeout_secs,
            self.drain_deadline.clone(),
        )
        .await;
        if let Err(e) = &r {
            self.end.failed(e);
        }
        r
    }
}

/// See [`Admitted::next_event`]; a `Failed` event becomes its error.
async fn next_event(
    rx: &mut Receiver<EngineEvent>,
    deadline: tokio::time::Instant,
    timeout_secs: u64,
    drain_deadline: tokio::sync::watch::Receiver<bool>,
) -> Result<EngineEvent, ApiError> {
    tokio::select! {
        biased;
        r = timeout_at(deadline, rx.recv()) => match r {
            Err(_) => Err(ApiError::Timeout { secs: timeout_secs }),
            Ok(None) => Err(ApiError::Internal(
                "the engine closed the request stream".into(),
            )),
            Ok(Some(EngineEvent::Failed(e))) => Err(e.into()),
            Ok(Some(ev)) => Ok(ev),
        },
        _ = crate::state::wait_deadline(drain_deadline) => Err(ApiError::ShuttingDown {
            reason: "the server shut down before this request finished (drain deadline passed)",
            retry_after_secs: 1,
        }),
    }
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
    let mut end = RequestEnd::new(request_id, started);
    let first = next_event(
        &mut rx,
        deadline,
        state.request_timeout.as_secs(),
        state.drain_deadline.clone(),
    )
    .await
    .inspect_err(|e| end.failed(e))?;
    Ok(Admitted {
        rx,
        first,
        permit,
        deadline,
        meta,
        include_usage: valid.include_usage,
        end,
        drain_deadline: state.drain_deadline.clone(),
    })
}

/// Collects a whole generation (non-streaming).
pub async fn collect(mut a: Admitted, timeout_secs: u64) -> Result<serde_json::Value, ApiError> {
    let mut text = String::new();
    let mut logprobs = LogprobsOut::new(&a.meta);
    let mut ev = Some(a.first.clone());
    loop {
        let event = match ev.take() {
            Some(e) => e,
            None => a.next_event(timeout_secs).await?,
        };
        match event {
            EngineEvent::Token {
                text: t,
                logprobs: lp,
                ..
            } => {
                a.end.tokens_sent += 1;
                logprobs.push(&t, lp);
                text.push_str(&t);
            }
            EngineEvent::Failed(e) => {
                let e = ApiError::from(e);
                a.end.failed(&e);
                return Err(e);
            }
            EngineEvent::Finished {
                finish_reason,
                usage,
            } => {
                let usage_out = (&usage).into();
                a.end.finished(&finish_reason, &usage);
                drop(a.permit);
                let lp = logprobs.take();
                return Ok(a.meta.full(&text, &finish_reason, &usage_out, lp));
            }
        }
    }
}
