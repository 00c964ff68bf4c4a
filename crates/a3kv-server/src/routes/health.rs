//! `GET /health` (liveness), `GET /ready` (model loaded, engine accepting, not draining),
//! `GET /v1/models`, `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process answers.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: 200 when the engine accepts requests, else 503 with Retry-After.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.check_accepting()?;
    Ok(Json(json!({
        "status": "ready",
        "running": state.engine.running(),
        "waiting": state.engine.waiting(),
    })))
}

fn model_object(state: &AppState) -> Value {
    json!({
        "id": state.limits.model_name,
        "object": "model",
        "created": state.created_unix,
        "owned_by": "a3kv",
    })
}

/// The served model list.
pub async fn models(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&state)]}))
}

/// One model (404 for any other name).
pub async fn model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if id != state.limits.model_name {
        return Err(ApiError::ModelNotFound(id));
    }
    Ok(Json(model_object(&state)))
}
