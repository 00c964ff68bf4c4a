//! Property tests of the HTTP edge: generated bodies for `POST /v1/chat/completions` and
//! `POST /v1/completions` go through what the router runs before the engine (the `axum::Json`
//! extractor, [`crate::extract::rejection`], then `validate` with the default configuration's
//! [`EdgeLimits`]); no model is needed.
//!
//! Three generators: arbitrary JSON (known and random keys, any values, nesting), raw bytes
//! (random, mutated valid bodies, `NaN`/`1e999`/lone surrogates, deep nesting, no content
//! type), and near-valid bodies whose every field is absent, valid, of a wrong type or of a
//! bad value (huge, negative, empty, unicode, long document lists, bad `fusion` objects,
//! unknown fields). Properties: never a panic; every answer is a valid request (all fields in
//! range, as the engine's own checks want them) or an [`ApiError`] whose response is a 4xx
//! with an OpenAI error body; and for near-valid bodies the oracle of which fields are wrong
//! decides which: a wrong type gives `invalid_json`, a bad value another 4xx, none a request.
//!
//! Files: this one drives the edge and checks answers; `fields.rs` generates each field's
//! values with their class (fine, wrong type, bad value); `near_valid.rs` assembles bodies and
//! holds the oracle; `raw.rs` has the arbitrary-JSON and raw-byte properties.
//!
//! Each property runs a fixed number of cases (`CASES_*`, about 10 s in all in release);
//! `PROPTEST_CASES=N` overrides them and `PROPTEST_RNG_SEED=N` fixes the seed to replay a run.

use a3kv_sched::{DocumentRef, PromptSpec};
use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::Request;
use axum::response::IntoResponse;
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::Value;

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::extract::rejection;
use crate::openai::{ChatRequest, CompletionRequest, EdgeLimits, ValidRequest};

mod fields;
mod near_valid;
mod raw;

const CASES_NEAR_VALID: u32 = 2500;
const CASES_ARBITRARY: u32 = 1500;
const CASES_RAW: u32 = 1500;
/// The served model name in these tests.
const MODEL: &str = "a3kv-test";
/// Layers of the default model (SmolLM2-135M), for the fusion parameters' own check.
const MODEL_LAYERS: usize = 30;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn limits() -> EdgeLimits {
    EdgeLimits::new(&ServerConfig::default(), MODEL.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

/// What the router does with a body before it reaches the engine.
fn edge(
    ep: Endpoint,
    body: Vec<u8>,
    json_type: bool,
    lim: &EdgeLimits,
) -> Result<ValidRequest, ApiError> {
    let mut req = Request::builder().method("POST").uri(match ep {
        Endpoint::Chat => "/v1/chat/completions",
        Endpoint::Completion => "/v1/completions",
    });
    if json_type {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Body::from(body))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let limit = ServerConfig::default().limits.max_body_bytes;
    block_on(async {
        match ep {
            Endpoint::Chat => axum::Json::<ChatRequest>::from_request(req, &())
                .await
                .map_err(|r| rejection(r, limit))?
                .0
                .validate("fuzz", lim),
            Endpoint::Completion => axum::Json::<CompletionRequest>::from_request(req, &())
                .await
                .map_err(|r| rejection(r, limit))?
                .0
                .validate("fuzz", lim),
        }
    })
}

/// The error's HTTP response is a 4xx with exactly `{"error": {message, type, param, code}}`.
fn check_error(e: &ApiError) -> Result<(), TestCaseError> {
    let resp = e.clone().into_response();
    let status = resp.status();
    prop_assert!(status.is_client_error(), "{e:?} answered {status}");
    let bytes = block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
        .map_err(|err| TestCaseError::fail(format!("body of {e:?}: {err}")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|err| TestCaseError::fail(format!("body of {e:?} is not JSON: {err}")))?;
    let outer = v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    prop_assert_eq!(outer, Some(vec!["error".to_string()]), "{}", v);
    let err = &v["error"];
    let keys = err.as_object().map(|o| {
        let mut k: Vec<&str> = o.keys().map(String::as_str).collect();
        k.sort_unstable();
        k.join(",")
    });
    prop_assert_eq!(keys.as_deref(), Some("code,message,param,type"), "{}", v);
    prop_assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        v
    );
    prop_assert!(err["type"].as_str().is_some_and(|t| !t.is_empty()), "{}", v);
    prop_assert!(err["code"].as_str().is_some_and(|c| !c.is_empty()), "{}", v);
    prop_assert!(err["param"].is_null() || err["param"].is_string(), "{}", v);
    Ok(())
}

/// A valid request is in range everywhere, by the engine's and fusion's own checks too.
fn check_valid(v: &ValidRequest, lim: &EdgeLimits) -> Result<(), TestCaseError> {
    let g = &v.generate;
    prop_assert!((1..=lim.max_new_tokens).contains(&g.max_tokens), "{g:?}");
    prop_assert!(
        g.sampling.validate().is_ok(),
        "sampling the engine rejects: {:?}",
        g.sampling
    );
    prop_assert!(g.sampling.temperature <= 2.0, "{:?}", g.sampling);
    prop_assert!(g.stop.len() <= 4, "{:?}", g.stop);
    prop_assert!(
        g.stop.iter().all(|s| !s.is_empty() && s.len() <= 256),
        "{:?}",
        g.stop
    );
    if let Some(f) = &g.fusion {
        prop_assert!(
            f.validate(MODEL_LAYERS).is_ok(),
            "fusion the engine rejects: {f:?}"
        );
    }
    match &g.prompt {
        PromptSpec::Rag {
            documents,
            question: _,
            system: _,
        } => {
            prop_assert!(!documents.is_empty() && documents.len() <= lim.max_documents);
            let mut ids = Vec::new();
            for d in documents {
                match d {
                    DocumentRef::Id(id) => {
                        prop_assert!(!id.is_empty() && id.len() <= 256, "{id:?}");
                        ids.push(id.clone());
                    }
                    DocumentRef::Text { id, text } => {
                        prop_assert!(!text.trim().is_empty());
                        prop_assert!(id.as_ref().is_none_or(|i| !i.is_empty() && i.len() <= 256));
                    }
                }
            }
            prop_assert_eq!(&ids, &v.document_ids);
        }
        PromptSpec::Chat { messages } => {
            prop_assert!(!messages.is_empty());
            prop_assert!(messages
                .iter()
                .all(|m| ["system", "user", "assistant"].contains(&m.role.as_str())));
            prop_assert!(v.document_ids.is_empty());
        }
        PromptSpec::Text { prompt } => {
            prop_assert!(!prompt.is_empty());
            prop_assert!(v.document_ids.is_empty());
        }
    }
    Ok(())
}

fn check(result: &Result<ValidRequest, ApiError>, lim: &EdgeLimits) -> Result<(), TestCaseError> {
    match result {
        Ok(v) => check_valid(v, lim),
        Err(e) => check_error(e),
    }
}
