//! Errors: [`ConfigError`] (start-up), [`ServeError`] (the `serve` entry point) and
//! [`ApiError`], whose [`ApiError::parts`] is the one table from error to HTTP status and
//! OpenAI error JSON `{"error": {"message", "type", "param", "code"}}`.

use std::path::PathBuf;

use a3kv_sched::EngineError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A configuration error; the message names the key (or file) and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// OS error.
        reason: String,
    },
    /// Not valid TOML, or not deserialisable.
    #[error("invalid configuration in {source_name}: {reason}")]
    Parse {
        /// Which layer.
        source_name: String,
        /// Parser message.
        reason: String,
    },
    /// A key the configuration does not have.
    #[error("unknown config key `{key}` in {source_name}; known keys here: {known}")]
    UnknownKey {
        /// Dotted key.
        key: String,
        /// Which layer.
        source_name: String,
        /// Keys allowed at that level.
        known: String,
    },
    /// A value of the wrong TOML type.
    #[error("config key `{key}` in {source_name} must be {} {expected}, found {found}", article(.expected))]
    WrongType {
        /// Dotted key.
        key: String,
        /// Which layer.
        source_name: String,
        /// Expected TOML type.
        expected: &'static str,
        /// What was given.
        found: String,
    },
    /// A value the key's type rejects (e.g. an unknown enum variant, a negative size).
    #[error("config key `{key}` in {source_name} is invalid: {reason}")]
    Value {
        /// Dotted key (of the table, when no single key is to blame).
        key: String,
        /// Which layer gave the value.
        source_name: String,
        /// Deserialiser message (names the field and the allowed values).
        reason: String,
    },
    /// A value out of range.
    #[error("config key `{key}` = {value} is invalid: allowed {allowed}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// The value given.
        value: String,
        /// The allowed range or set.
        allowed: String,
    },
}

/// Why `serve` failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model could not be loaded.
    #[error("loading model: {0}")]
    Model(String),
    /// The engine did not start. (The engine error is in the message, so it is not also
    /// the error's `source`: anyhow would print it twice, again under "Caused by".)
    #[error("starting engine: {0}")]
    Engine(EngineError),
    /// Binding or serving failed (the OS error is in the message, not a `source`, as above).
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The metrics recorder could not be installed.
    #[error("installing the Prometheus recorder: {0}")]
    Metrics(String),
    /// `engine.device` names a device this machine or binary does not have.
    #[error(transparent)]
    Device(#[from] a3kv_cuda::DeviceError),
}

impl From<EngineError> for ServeError {
    fn from(e: EngineError) -> Self {
        ServeError::Engine(e)
    }
}

/// "a" or "an" before a TOML type name.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// An HTTP API error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON or does not match the schema.
    #[error("{0}")]
    InvalidJson(String),
    /// A field has a bad value.
    #[error("{message}")]
    InvalidParam {
        /// The field (`max_tokens`, `fusion.method`, …).
        param: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// `model` names a model this server does not serve.
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    /// A chunk/document id that is not stored.
    #[error("unknown document or chunk id `{0}`")]
    ChunkNotFound(String),
    /// No such route.
    #[error("no route for {0}")]
    RouteNotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed on {0}")]
    MethodNotAllowed(String),
    /// The body exceeds `limits.max_body_bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The prompt exceeds `engine.max_prompt_tokens`.
    #[error("prompt of {tokens} tokens exceeds the limit of {limit} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// The limit.
        limit: usize,
    },
    /// More documents than `engine.max_documents`.
    #[error("{count} documents exceed the limit of {limit} per request")]
    TooManyDocuments {
        /// Documents given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// `limits.max_concurrent_requests` requests are in flight.
    #[error("too many concurrent requests; retry after {retry_after_secs} s")]
    TooManyRequests {
        /// Retry-After.
        retry_after_secs: u64,
    },
    /// The engine's waiting queue is full.
    #[error("the engine is overloaded; retry after {retry_after_secs} s")]
    Overloaded {
        /// Retry-After.
        retry_after_secs: u64,
    },
    /// The server is draining or the engine is not ready.
    #[error("{reason}; retry after {retry_after_secs} s")]
    Unavailable {
        /// Why.
        reason: &'static str,
        /// Retry-After.
        retry_after_secs: u64,
    },
    /// The server is shutting down: new requests are refused while it drains, and requests
    /// still running when `shutdown.drain_secs` passes are cut.
    #[error("{reason}; retry after {retry_after_secs} s")]
    ShuttingDown {
        /// What happened to this request.
        reason: &'static str,
        /// Retry-After (another replica, or this one after its restart).
        retry_after_secs: u64,
    },
    /// `limits.request_timeout_secs` passed.
    #[error("the request did not finish within {secs} s")]
    Timeout {
        /// The limit.
        secs: u64,
    },
    /// A bug; the detail is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The OpenAI error object.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Human-readable message.
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The offending field, if any.
    pub param: Option<String>,
    /// Stable code.
    pub code: &'static str,
}

/// `{"error": …}`.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

impl ApiError {
    /// The table: (status, OpenAI type, code, param, Retry-After).
    pub fn parts(
        &self,
    ) -> (
        StatusCode,
        &'static str,
        &'static str,
        Option<String>,
        Option<u64>,
    ) {
        use StatusCode as S;
        const BAD: &str = "invalid_request_error";
        match self {
            ApiError::InvalidJson(_) => (S::BAD_REQUEST, BAD, "invalid_json", None, None),
            ApiError::InvalidParam { param, .. } => (
                S::BAD_REQUEST,
                BAD,
                "invalid_value",
                Some(param.clone()),
                None,
            ),
            ApiError::ModelNotFound(_) => (
                S::NOT_FOUND,
                BAD,
                "model_not_found",
                Some("model".into()),
                None,
            ),
            ApiError::ChunkNotFound(_) => (
                S::NOT_FOUND,
                BAD,
                "chunk_not_found",
                Some("documents".into()),
                None,
            ),
            ApiError::RouteNotFound(_) => (S::NOT_FOUND, BAD, "not_found", None, None),
            ApiError::MethodNotAllowed(_) => {
                (S::METHOD_NOT_ALLOWED, BAD, "method_not_allowed", None, None)
            }
            ApiError::BodyTooLarge { .. } => {
                (S::PAYLOAD_TOO_LARGE, BAD, "body_too_large", None, None)
            }
            ApiError::PromptTooLong { .. } => (
                S::PAYLOAD_TOO_LARGE,
                BAD,
                "context_length_exceeded",
                None,
                None,
            ),
            ApiError::TooManyDocuments { .. } => (
                S::PAYLOAD_TOO_LARGE,
                BAD,
                "too_many_documents",
                Some("documents".into()),
                None,
            ),
            ApiError::TooManyRequests { retry_after_secs } => (
                S::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "too_many_concurrent_requests",
                None,
                Some(*retry_after_secs),
            ),
            ApiError::Overloaded { retry_after_secs } => (
                S::SERVICE_UNAVAILABLE,
                "server_overloaded",
                "queue_full",
                None,
                Some(*retry_after_secs),
            ),
            ApiError::Unavailable {
                retry_after_secs, ..
            } => (
                S::SERVICE_UNAVAILABLE,
                "server_unavailable",
                "unavailable",
                None,
                Some(*retry_after_secs),
            ),
            ApiError::ShuttingDown {
                retry_after_secs, ..
            } => (
                S::SERVICE_UNAVAILABLE,
                "server_unavailable",
                "shutting_down",
                None,
                Some(*retry_after_secs),
            ),
            ApiError::Timeout { .. } => {
                (S::GATEWAY_TIMEOUT, "timeout_error", "timeout", None, None)
            }
            ApiError::Internal(_) => (
                S::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                None,
                None,
            ),
        }
    }

    /// Metric label of a rejection (`a3kv:requests_rejected_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidParam { .. } => "invalid_value",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::ChunkNotFound(_) => "unknown_chunk",
            ApiError::RouteNotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::PromptTooLong { .. } => "prompt_too_long",
            ApiError::TooManyDocuments { .. } => "too_many_documents",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Overloaded { .. } => "queue_full",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::ShuttingDown { .. } => "shutting_down",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The JSON body (internal details are not sent).
    pub fn body(&self) -> ErrorEnvelope {
        let (_, kind, code, param, _) = self.parts();
        let message = match self {
            ApiError::Internal(_) => "internal server error (logged)".to_string(),
            other => other.to_string(),
        };
        ErrorEnvelope {
            error: ErrorBody {
                message,
                kind,
                param,
                code,
            },
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::QueueFull { retry_after_secs } => ApiError::Overloaded {
                retry_after_secs: retry_after_secs.max(1),
            },
            EngineError::PromptTooLong { tokens, limit } => {
                ApiError::PromptTooLong { tokens, limit }
            }
            EngineError::TooManyDocuments { count, limit } => {
                ApiError::TooManyDocuments { count, limit }
            }
            EngineError::UnknownChunk(id) => ApiError::ChunkNotFound(id),
            EngineError::InvalidRequest(m) => ApiError::InvalidParam {
                param: "request".into(),
                message: m,
            },
            EngineError::ShuttingDown => ApiError::ShuttingDown {
                reason: "the server is shutting down",
                retry_after_secs: 1,
            },
            EngineError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, ..) = self.parts();
        let retry = self.parts().4;
        if status.is_server_error() && !matches!(status, StatusCode::SERVICE_UNAVAILABLE) {
            tracing::error!(error = %self, status = status.as_u16(), "request failed");
        } else {
            tracing::info!(error = %self, status = status.as_u16(), "request rejected");
        }
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let Some(secs) = retry {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_statuses() {
        let status = |e: EngineError| ApiError::from(e).parts().0.as_u16();
        assert_eq!(
            status(EngineError::QueueFull {
                retry_after_secs: 2
            }),
            503
        );
        assert_eq!(
            status(EngineError::PromptTooLong {
                tokens: 9,
                limit: 8
            }),
            413
        );
        assert_eq!(
            status(EngineError::TooManyDocuments { count: 9, limit: 8 }),
            413
        );
        assert_eq!(status(EngineError::UnknownChunk("x".into())), 404);
        assert_eq!(status(EngineError::InvalidRequest("x".into())), 400);
        assert_eq!(status(EngineError::ShuttingDown), 503);
        assert_eq!(status(EngineError::Internal("x".into())), 500);
        let body = serde_json::to_value(ApiError::Internal("secret detail".into()).body()).unwrap();
        assert!(
            !body.to_string().contains("secret"),
            "internal details are not sent"
        );
        assert_eq!(body["error"]["code"], "internal_error");
    }
}
