//! The chunk API: `PUT /v1/chunks` (precompute and store, optionally pinned),
//! `GET /v1/chunks/{id}`, `DELETE /v1/chunks/{id}`.

use a3kv_sched::ChunkInfo;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// One document to store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkIn {
    /// Id to store it under (default: its content hash).
    pub id: Option<String>,
    /// The text.
    pub text: String,
}

/// `PUT /v1/chunks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutChunks {
    /// Documents to precompute and store.
    pub documents: Vec<ChunkIn>,
    /// Pin them in memory (never evicted until deleted).
    #[serde(default)]
    pub pin: bool,
}

/// A stored document in responses.
#[derive(Debug, Serialize)]
pub struct ChunkOut {
    /// Always `chunk`.
    pub object: &'static str,
    /// Engine's report.
    #[serde(flatten)]
    pub info: ChunkInfo,
}

fn out(info: ChunkInfo) -> ChunkOut {
    ChunkOut {
        object: "chunk",
        info,
    }
}

fn check_id(id: &str, param: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::InvalidParam {
            param: param.into(),
            message: "a document id must be 1 to 256 characters".into(),
        });
    }
    Ok(())
}

/// Precomputes and stores documents; returns their ids and sizes.
pub async fn put(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PutChunks>,
) -> Result<Json<Value>, ApiError> {
    state.check_accepting()?;
    if body.documents.is_empty() {
        return Err(ApiError::InvalidParam {
            param: "documents".into(),
            message: "documents must not be empty".into(),
        });
    }
    if body.documents.len() > state.limits.max_documents {
        return Err(ApiError::TooManyDocuments {
            count: body.documents.len(),
            limit: state.limits.max_documents,
        });
    }
    let mut texts = Vec::with_capacity(body.documents.len());
    for (i, d) in body.documents.into_iter().enumerate() {
        if let Some(id) = &d.id {
            check_id(id, &format!("documents[{i}].id"))?;
        }
        if d.text.trim().is_empty() {
            return Err(ApiError::InvalidParam {
                param: format!("documents[{i}].text"),
                message: "document text must not be empty".into(),
            });
        }
        texts.push((d.id, d.text));
    }
    let _permit =
        state
            .concurrency
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyRequests {
                retry_after_secs: state.retry_after_secs,
            })?;
    let infos = tokio::time::timeout(
        state.request_timeout,
        state.engine.put_chunks(texts, body.pin),
    )
    .await
    .map_err(|_| ApiError::Timeout {
        secs: state.request_timeout.as_secs(),
    })??;
    let data: Vec<ChunkOut> = infos.into_iter().map(out).collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// Reports a stored document.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ChunkOut>, ApiError> {
    check_id(&id, "id")?;
    Ok(Json(out(state.engine.get_chunk(&id).await?)))
}

/// Deletes a stored document (404 when unknown).
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_id(&id, "id")?;
    if state.engine.delete_chunk(&id).await? {
        Ok(Json(json!({"id": id, "object": "chunk", "deleted": true})))
    } else {
        Err(ApiError::ChunkNotFound(id))
    }
}
