//! `POST /v1/chat/completions` and `POST /v1/completions`.

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::generate::{admit, collect};
use crate::openai::{ChatRequest, CompletionRequest, ValidRequest};
use crate::reply::{Endpoint, ReplyMeta};
use crate::request_id::RequestId;
use crate::state::AppState;

/// Chat completions (OpenAI) with the RAG extension.
pub async fn chat(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    body: Result<ApiJson<ChatRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let valid = edge(body.and_then(|ApiJson(r)| r.validate(&rid.0, &state.limits)))?;
    run(state, valid, Endpoint::Chat, &rid).await
}

/// Text completions (OpenAI) with the RAG extension.
pub async fn completions(
    State(state): State<AppState>,
    Extension(rid): Extension<RequestId>,
    body: Result<ApiJson<CompletionRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let valid = edge(body.and_then(|ApiJson(r)| r.validate(&rid.0, &state.limits)))?;
    run(state, valid, Endpoint::Completion, &rid).await
}

/// Counts an edge rejection (bad body, bad field) before passing it on.
fn edge(r: Result<ValidRequest, ApiError>) -> Result<ValidRequest, ApiError> {
    r.inspect_err(|e| crate::metrics::record_rejected(e.reason()))
}

async fn run(
    state: AppState,
    valid: ValidRequest,
    endpoint: Endpoint,
    rid: &RequestId,
) -> Result<Response, ApiError> {
    let meta = ReplyMeta::new(endpoint, &rid.0, &state.limits.model_name)
        .with_logprobs(valid.generate.logprobs.is_some());
    let stream = valid.stream;
    let timeout_secs = state.request_timeout.as_secs();
    let admitted = admit(&state, valid, meta).await?;
    if stream {
        Ok(crate::sse::respond(admitted, timeout_secs).into_response())
    } else {
        Ok(Json(collect(admitted, timeout_secs).await?).into_response())
    }
}
