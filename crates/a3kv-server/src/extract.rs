//! `ApiJson<T>`: the JSON body extractor whose rejections (bad JSON, wrong types, body over
//! `limits.max_body_bytes`) answer with the same OpenAI error JSON as every other error.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON body of type `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(rejection(rej, state.max_body_bytes)),
        }
    }
}

/// The [`ApiError`] of a JSON extractor rejection (413 over `limit`, else 400 `invalid_json`).
pub(crate) fn rejection(rej: JsonRejection, limit: usize) -> ApiError {
    if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::BodyTooLarge { limit };
    }
    let msg = match &rej {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a JSON body with `Content-Type: application/json`".to_string()
        }
        other => other.body_text(),
    };
    ApiError::InvalidJson(msg)
}
