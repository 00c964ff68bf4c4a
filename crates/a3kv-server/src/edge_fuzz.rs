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
//! Each property runs a fixed number of cases (`CASES_*`, about 10 s in all in release);
//! `PROPTEST_CASES=N` overrides them and `PROPTEST_RNG_SEED=N` fixes the seed to replay a run.

use std::collections::BTreeMap;

use a3kv_sched::{DocumentRef, PromptSpec};
use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::Request;
use axum::response::IntoResponse;
use futures::executor::block_on;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Value};

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::extract::rejection;
use crate::openai::{ChatRequest, CompletionRequest, EdgeLimits, ValidRequest};

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

// ---------------------------------------------------------------------------------------------
// Near-valid bodies with an oracle.

/// How a generated field value fares: fine, rejected by deserialisation (`invalid_json`),
/// or rejected by validation (another 4xx). Ordered: the worst field decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Ok,
    BadValue,
    BadType,
}

type Gen = BoxedStrategy<(Value, Class)>;

fn pick(options: Vec<(Value, Class)>) -> Gen {
    prop::sample::select(options).boxed()
}

fn ok(v: Value) -> (Value, Class) {
    (v, Class::Ok)
}

fn bad_value(v: Value) -> (Value, Class) {
    (v, Class::BadValue)
}

fn bad_type(v: Value) -> (Value, Class) {
    (v, Class::BadType)
}

/// Values of the wrong JSON type for any scalar field.
fn wrong_types() -> Vec<(Value, Class)> {
    vec![
        bad_type(json!([])),
        bad_type(json!({})),
        bad_type(json!({"nested": {"deeper": [1, 2, 3]}})),
    ]
}

/// Wrong types for a number field: the above plus numbers spelled as strings.
fn not_numbers() -> Vec<(Value, Class)> {
    let mut v = wrong_types();
    v.extend([
        bad_type(json!("NaN")),
        bad_type(json!("Infinity")),
        bad_type(json!("1")),
    ]);
    v
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-zA-Z0-9?.,][a-zA-Z0-9 ?.,]{0,39}",
        1 => any::<String>().prop_filter("non-blank", |s| !s.trim().is_empty()),
        1 => Just("naïve 東京 🚀 \u{202e}rtl\u{0000}nul".to_string()),
        1 => (1usize..5_000).prop_map(|n| "w ".repeat(n)),
    ]
    .boxed()
}

/// `max_tokens` / `max_completion_tokens` (default limit 1024).
fn token_count() -> Gen {
    let mut bad = not_numbers();
    bad.extend([
        bad_type(json!(1.5)),
        bad_type(json!(1e3)),
        bad_type(json!(u64::MAX)),
        bad_type(json!("16")),
        bad_type(json!(true)),
        bad_value(json!(0)),
        bad_value(json!(-1)),
        bad_value(json!(1025)),
        bad_value(json!(i64::MAX)),
        bad_value(json!(i64::MIN)),
        ok(Value::Null),
    ]);
    prop_oneof![
        3 => (1i64..=1024).prop_map(|n| ok(json!(n))),
        2 => pick(bad),
    ]
    .boxed()
}

fn temperature() -> Gen {
    let mut v = not_numbers();
    v.extend([
        ok(json!(0)),
        ok(json!(-0.0)),
        ok(json!(2)),
        ok(json!(1e-300)),
        ok(Value::Null),
        bad_value(json!(-0.001)),
        bad_value(json!(2.000_001)),
        bad_value(json!(1e308)),
        bad_value(json!(-1e308)),
        bad_value(json!(u64::MAX)),
        bad_value(json!(i64::MIN)),
        bad_type(json!(false)),
    ]);
    prop_oneof![
        2 => (0.0f64..=2.0).prop_map(|t| ok(json!(t))),
        2 => pick(v),
    ]
    .boxed()
}

fn top_p() -> Gen {
    let mut v = not_numbers();
    v.extend([
        ok(json!(1)),
        ok(json!(1.0)),
        ok(Value::Null),
        // Positive as f64 but 0 as the engine's f32: the edge must refuse it.
        bad_value(json!(1e-300)),
        bad_value(json!(0)),
        bad_value(json!(-0.0)),
        bad_value(json!(-1)),
        bad_value(json!(1.000_001)),
        bad_value(json!(1e308)),
    ]);
    prop_oneof![
        2 => (1e-6f64..=1.0).prop_map(|p| ok(json!(p))),
        2 => pick(v),
    ]
    .boxed()
}

fn seed() -> Gen {
    prop_oneof![
        2 => any::<u64>().prop_map(|s| ok(json!(s))),
        1 => pick(vec![
            bad_type(json!(-1)),
            bad_type(json!(1.5)),
            bad_type(json!(1.8446744073709552e19)),
            bad_type(json!("7")),
            ok(Value::Null),
        ]),
    ]
    .boxed()
}

fn stop() -> Gen {
    let mut v = vec![
        bad_type(json!({})),
        bad_type(json!({"nested": {"deeper": [1, 2, 3]}})),
    ];
    v.extend([
        ok(json!("x")),
        ok(json!([])),
        ok(json!(["a", "b", "c", "d"])),
        ok(json!("é".repeat(128))),
        ok(Value::Null),
        bad_value(json!("")),
        bad_value(json!([""])),
        bad_value(json!(["a", "b", "c", "d", "e"])),
        bad_value(json!("x".repeat(257))),
        bad_value(json!(["é".repeat(129)])),
        bad_type(json!(5)),
        bad_type(json!([1])),
        bad_type(json!([["a"]])),
    ]);
    prop_oneof![
        1 => "[a-z\n]{1,8}".prop_map(|s| ok(json!(s))),
        3 => pick(v),
    ]
    .boxed()
}

fn stream() -> Gen {
    pick(vec![
        ok(json!(true)),
        ok(json!(false)),
        bad_type(json!("true")),
        bad_type(json!(1)),
        bad_type(Value::Null),
    ])
}

fn stream_options() -> Gen {
    pick(vec![
        ok(json!({"include_usage": true})),
        ok(json!({"include_usage": false, "continuous_usage_stats": true})),
        ok(json!({})),
        ok(Value::Null),
        bad_type(json!("yes")),
        bad_type(json!({"include_usage": "yes"})),
        // serde reads a struct from an array of its fields in order: lenient, and harmless.
        ok(json!([true])),
        bad_type(json!(["yes"])),
    ])
}

fn n() -> Gen {
    pick(vec![
        ok(json!(1)),
        ok(Value::Null),
        bad_value(json!(0)),
        bad_value(json!(2)),
        bad_value(json!(u32::MAX)),
        bad_type(json!(-1)),
        bad_type(json!(1.5)),
        bad_type(json!(u64::from(u32::MAX) + 1)),
        bad_type(json!("1")),
    ])
}

fn model() -> Gen {
    let mut v = wrong_types();
    v.extend([
        ok(json!(MODEL)),
        ok(json!("")),
        ok(Value::Null),
        bad_value(json!("gpt-4o")),
        bad_value(json!(format!("{MODEL} "))),
        bad_type(json!(5)),
    ]);
    pick(v)
}

/// One `documents` entry.
fn document() -> Gen {
    let id_ok = prop_oneof![
        "[a-z0-9-]{1,64}".boxed(),
        Just("x".repeat(256)).boxed(),
        Just("é".repeat(128)).boxed(),
    ];
    prop_oneof![
        6 => text().prop_map(|t| ok(json!({"text": t}))),
        2 => id_ok.clone().prop_map(|id| ok(json!({"id": id}))),
        2 => (id_ok, text()).prop_map(|(id, t)| ok(json!({"id": id, "text": t}))),
        3 => pick(vec![
            bad_value(json!({})),
            bad_value(json!({"id": null, "text": null})),
            bad_value(json!({"text": ""})),
            bad_value(json!({"text": " \n\t "})),
            bad_value(json!({"id": ""})),
            bad_value(json!({"id": "", "text": "fine text"})),
            bad_value(json!({"id": "x".repeat(257)})),
            bad_value(json!({"id": "é".repeat(129)})),
            bad_type(json!({"id": 5})),
            bad_type(json!({"text": ["a"]})),
            bad_type(json!({"text": "t", "url": "http://x"})),
            bad_type(json!("doc-1")),
            bad_type(Value::Null),
        ]),
    ]
    .boxed()
}

/// The `documents` list: `(value, class, entries)`; more than 32 entries is a bad value.
fn documents() -> BoxedStrategy<(Value, Class, usize)> {
    let list = |len: std::ops::Range<usize>| {
        prop::collection::vec(document(), len).prop_map(|docs| {
            let class = docs.iter().map(|d| d.1).max().unwrap_or(Class::Ok);
            let n = docs.len();
            let class = if n > 32 {
                class.max(Class::BadValue)
            } else {
                class
            };
            (
                Value::Array(docs.into_iter().map(|d| d.0).collect()),
                class,
                n,
            )
        })
    };
    prop_oneof![
        6 => list(0..6),
        2 => list(28..40),
        1 => (33usize..2000).prop_map(|n| {
            let docs = (0..n).map(|i| json!({"text": format!("document {i}")})).collect();
            (Value::Array(docs), Class::BadValue, n)
        }),
        1 => pick(vec![ok(Value::Null), bad_type(json!("docs")), bad_type(json!({"text": "t"}))])
            .prop_map(|(v, c)| (v, c, 0)),
    ]
    .boxed()
}

/// The `fusion` object, with the server's default method (`a3`) when it names none.
fn fusion() -> Gen {
    let method = prop_oneof![
        3 => Just(None),
        4 => prop::sample::select(vec!["a3", "cacheblend", "epic", "reuse", "full"])
            .prop_map(|m| Some(ok(json!(m)))),
        1 => pick(vec![
            bad_value(json!("A3")),
            bad_value(json!("")),
            bad_value(json!("a3 ")),
            bad_value(json!("blend")),
            bad_type(json!(5)),
            bad_type(json!(["a3"])),
        ])
        .prop_map(Some),
    ];
    let budget = prop_oneof![
        3 => Just(vec![]),
        2 => (0.0f64..=1.0).prop_map(|r| vec![("recompute_ratio", ok(json!(r)))]),
        2 => (0i64..5000).prop_map(|n| vec![("recompute_tokens", ok(json!(n)))]),
        2 => pick(vec![
            ok(json!(i64::MAX)),
            bad_value(json!(-1)),
            bad_value(json!(i64::MIN)),
            bad_type(json!(1.5)),
            bad_type(json!(u64::MAX)),
            bad_type(json!("64")),
        ])
        .prop_map(|v| vec![("recompute_tokens", v)]),
        2 => pick(vec![
            ok(json!(0)),
            ok(json!(1)),
            bad_value(json!(-0.1)),
            bad_value(json!(1.000_001)),
            bad_value(json!(1e308)),
            bad_type(json!("0.15")),
            bad_type(json!(true)),
        ])
        .prop_map(|v| vec![("recompute_ratio", v)]),
        1 => Just(vec![
            ("recompute_ratio", ok(json!(0.2))),
            ("recompute_tokens", bad_value(json!(10))),
        ]),
    ];
    let sink = prop_oneof![
        3 => Just(None),
        2 => (0i64..=65_536).prop_map(|s| Some(ok(json!(s)))),
        1 => pick(vec![
            bad_value(json!(-1)),
            bad_value(json!(65_537)),
            bad_value(json!(i64::MAX)),
            bad_type(json!(2.5)),
        ])
        .prop_map(Some),
    ];
    // Only the range is known here; whether the method allows a weight is decided below.
    let hybrid = prop_oneof![
        3 => Just(None),
        2 => (0.0f64..=1.0).prop_map(|w| Some(ok(json!(w)))),
        1 => pick(vec![
            bad_value(json!(-0.5)),
            bad_value(json!(1.5)),
            bad_type(json!("half")),
        ])
        .prop_map(Some),
    ];
    let object = (method, budget, sink, hybrid, prop::bool::weighted(0.1)).prop_map(
        |(method, budget, sink, hybrid, unknown)| {
            let mut obj = Map::new();
            let mut class = Class::Ok;
            let mut effective_a3 = true;
            if let Some((v, c)) = method {
                effective_a3 = v == json!("a3");
                obj.insert("method".into(), v);
                class = class.max(c);
            }
            for (k, (v, c)) in budget {
                obj.insert(k.into(), v);
                class = class.max(c);
            }
            if let Some((v, c)) = sink {
                obj.insert("sink_tokens".into(), v);
                class = class.max(c);
            }
            if let Some((v, c)) = hybrid {
                let c = if c == Class::Ok && !effective_a3 {
                    Class::BadValue
                } else {
                    c
                };
                obj.insert("hybrid_weight".into(), v);
                class = class.max(c);
            }
            if unknown {
                obj.insert("check_layer".into(), json!(3));
                class = Class::BadType;
            }
            (Value::Object(obj), class)
        },
    );
    prop_oneof![
        8 => object,
        1 => pick(vec![ok(Value::Null), bad_type(json!("a3")), bad_type(json!(0.15))]),
    ]
    .boxed()
}

/// A chat message list and its class: `None` for a list that is valid only without
/// documents (a conversation with history).
fn messages() -> BoxedStrategy<(Value, Option<Class>)> {
    let content = prop_oneof![
        3 => text().prop_map(Value::from),
        1 => Just(json!("")),
        1 => prop::collection::vec(text(), 1..4)
            .prop_map(|parts| Value::Array(parts.into_iter().map(|t| json!({"type": "text", "text": t})).collect())),
    ];
    let system = (
        prop::sample::select(vec!["system", "developer"]),
        content.clone(),
    )
        .prop_map(|(r, c)| json!({"role": r, "content": c}));
    let rag = (prop::collection::vec(system, 0..3), content.clone()).prop_map(|(mut v, q)| {
        v.push(json!({"role": "user", "content": q}));
        (Value::Array(v), Some(Class::Ok))
    });
    let history = content.prop_map(|c| {
        let v = json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": c},
        ]);
        (v, None)
    });
    let bad = pick(vec![
        bad_value(json!([])),
        bad_value(json!([{"role": "robot", "content": "hi"}])),
        bad_value(json!([{"role": "User", "content": "hi"}])),
        bad_value(json!([{"role": "user", "content": 5}])),
        bad_value(json!([{"role": "user", "content": null}])),
        bad_value(json!([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}])),
        bad_value(json!([{"role": "user", "content": [{"type": "text"}]}])),
        bad_type(json!("hi")),
        bad_type(json!([{"role": 5, "content": "x"}])),
        bad_type(json!([{"content": "x"}])),
        bad_type(json!([{"role": "user"}])),
        bad_type(Value::Null),
    ])
    .prop_map(|(v, c)| (v, Some(c)));
    prop_oneof![6 => rag, 2 => history, 3 => bad].boxed()
}

fn prompt() -> Gen {
    prop_oneof![
        4 => text().prop_map(|t| ok(json!(t))),
        1 => text().prop_map(|t| ok(json!([t]))),
        2 => pick(vec![
            bad_value(json!("")),
            bad_value(json!([])),
            bad_value(json!([""])),
            bad_value(json!(["a", "b"])),
            bad_value(json!([5])),
            bad_value(json!(5)),
            bad_value(Value::Null),
            bad_value(json!({"text": "x"})),
        ]),
    ]
    .boxed()
}

/// Fields every server ignores (OpenAI fields a3kv does not implement, vendor extensions).
fn unknown_fields() -> BoxedStrategy<Vec<(String, Value)>> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "ignore_eos",
            "logprobs",
            "presence_penalty",
            "user",
            "tools",
            "response_format",
        ])
        .prop_map(String::from),
        "x_[a-z]{1,10}",
    ];
    let value = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
        Just(json!({"a": [1, {"b": null}]})),
    ];
    prop::collection::vec((name, value), 0..3).boxed()
}

/// A near-valid body: its JSON, the worst class of its fields, the number of documents and
/// the `max_tokens` it asks for (`None`: the default).
#[derive(Debug, Clone)]
struct NearValid {
    body: Value,
    class: Class,
    documents: usize,
}

fn field(p: f64, g: Gen) -> BoxedStrategy<Option<(Value, Class)>> {
    prop::option::weighted(p, g).boxed()
}

fn near_valid(ep: Endpoint) -> BoxedStrategy<NearValid> {
    let head = (
        match ep {
            Endpoint::Chat => messages().prop_map(Some).boxed(),
            Endpoint::Completion => prop::option::weighted(0.95, prompt())
                .prop_map(|p| p.map(|(v, c)| (v, Some(c))))
                .boxed(),
        },
        prop::option::weighted(0.5, documents()),
        field(0.4, fusion()),
        field(0.3, model()),
        field(0.4, token_count()),
        field(0.15, token_count()),
    );
    let tail = (
        field(0.3, temperature()),
        field(0.3, top_p()),
        field(0.2, seed()),
        field(0.2, stop()),
        field(0.3, stream()),
        field(0.2, stream_options()),
        field(0.1, n()),
        unknown_fields(),
    );
    (head, tail)
        .prop_map(move |(head, tail)| {
            let (first, docs, fusion, model, max_tokens, max_completion_tokens) = head;
            let (temperature, top_p, seed, stop, stream, stream_options, n, unknown) = tail;
            let mut body = Map::new();
            let mut class = Class::Ok;
            for (k, v) in unknown {
                body.insert(k, v);
            }
            let n_docs = docs.as_ref().map_or(0, |d| d.2);
            if let Some((v, c, _)) = docs {
                body.insert("documents".into(), v);
                class = class.max(c);
            }
            let first_name = match ep {
                Endpoint::Chat => "messages",
                Endpoint::Completion => "prompt",
            };
            match first {
                Some((v, c)) => {
                    body.insert(first_name.into(), v);
                    // A conversation with history is fine unless there are documents.
                    class = class.max(c.unwrap_or(if n_docs > 0 {
                        Class::BadValue
                    } else {
                        Class::Ok
                    }));
                }
                None => class = Class::BadType,
            }
            // `max_completion_tokens` wins over `max_tokens` when given (not null): then
            // only a wrong type of `max_tokens` matters.
            let mct_given = max_completion_tokens
                .as_ref()
                .is_some_and(|(v, _)| !v.is_null());
            if let Some((v, c)) = max_tokens {
                body.insert("max_tokens".into(), v);
                class = class.max(if mct_given && c == Class::BadValue {
                    Class::Ok
                } else {
                    c
                });
            }
            for (name, f) in [
                ("max_completion_tokens", max_completion_tokens),
                ("fusion", fusion),
                ("model", model),
                ("temperature", temperature),
                ("top_p", top_p),
                ("seed", seed),
                ("stop", stop),
                ("stream", stream),
                ("stream_options", stream_options),
                ("n", n),
            ] {
                if let Some((v, c)) = f {
                    body.insert(name.into(), v);
                    class = class.max(c);
                }
            }
            NearValid {
                body: Value::Object(body),
                class,
                documents: n_docs,
            }
        })
        .boxed()
}

fn check_near_valid(ep: Endpoint, case: &NearValid, lim: &EdgeLimits) -> Result<(), TestCaseError> {
    let bytes = serde_json::to_vec(&case.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let result = edge(ep, bytes, true, lim);
    check(&result, lim)?;
    match (&result, case.class) {
        (Ok(v), Class::Ok) => {
            let b = &case.body;
            let asked = [&b["max_completion_tokens"], &b["max_tokens"]]
                .into_iter()
                .find_map(Value::as_u64)
                .map_or(lim.default_max_tokens, |n| n as usize);
            prop_assert_eq!(v.generate.max_tokens, asked);
            prop_assert_eq!(v.stream, b["stream"].as_bool().unwrap_or(false));
            let docs = match &v.generate.prompt {
                PromptSpec::Rag { documents, .. } => documents.len(),
                _ => 0,
            };
            prop_assert_eq!(docs, case.documents);
            prop_assert_eq!(v.generate.fusion.is_some(), b["fusion"].is_object());
        }
        (Err(e), Class::BadType) => {
            prop_assert_eq!(e.parts().2, "invalid_json", "{:?}", e);
        }
        (Err(e), Class::BadValue) => {
            prop_assert_ne!(e.parts().2, "invalid_json", "{:?}", e);
        }
        (r, want) => {
            return Err(TestCaseError::fail(format!(
                "oracle says {want:?}, edge said {r:?}"
            )))
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES_NEAR_VALID))]

    #[test]
    fn near_valid_chat_bodies_match_the_oracle(case in near_valid(Endpoint::Chat)) {
        check_near_valid(Endpoint::Chat, &case, &limits())?;
    }

    #[test]
    fn near_valid_completion_bodies_match_the_oracle(case in near_valid(Endpoint::Completion)) {
        check_near_valid(Endpoint::Completion, &case, &limits())?;
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary JSON and raw bytes: no oracle, only "valid or a well-formed 4xx".

const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "include_usage",
    "n",
    "documents",
    "id",
    "fusion",
    "method",
    "recompute_ratio",
    "recompute_tokens",
    "sink_tokens",
    "hybrid_weight",
];

fn key() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(String::from),
        1 => "[a-z_]{0,12}",
        1 => any::<String>(),
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![0.0, -0.0, 1e-300, 1e308, -1e308, 0.15, 2.0, 1.0])
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop::sample::select(vec![
            "user",
            "system",
            "assistant",
            "a3",
            "text",
            "full",
            ""
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Mostly objects with known keys (so validation, not only parsing, runs), some any value.
fn arbitrary_body() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => prop::collection::btree_map(key(), json_value(), 0..12)
            .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        1 => json_value(),
    ]
    .boxed()
}

/// Bytes that are rarely valid JSON: random, mutated valid bodies, numbers JSON cannot hold,
/// lone surrogates, deep nesting.
fn raw_body() -> BoxedStrategy<Vec<u8>> {
    let valid = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Where is Paris?"}],
        "prompt": "Where is Paris?",
        "documents": [{"text": "Paris is in France."}, {"id": "doc-1"}],
        "fusion": {"method": "a3", "recompute_ratio": 0.15},
        "max_tokens": 8, "temperature": 0, "stream": true,
    })
    .to_string()
    .into_bytes();
    let splice = prop::sample::select(vec![
        "NaN",
        "-Infinity",
        "1e999",
        "-1e999",
        "\"\\ud800\"",
        "\"\\udc00x\"",
        "\u{0}",
        "{",
        "]",
        ",",
        "\"",
        "\\",
        "00",
        "-",
        "1.",
        ".5",
        "tru",
        "\"\\u12\"",
        "\u{feff}",
    ]);
    let mutated = (
        Just(valid.clone()),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        splice,
    )
        .prop_map(|(mut b, at, len, s)| {
            let start = at.index(b.len());
            let end = (start + len.index(8)).min(b.len());
            b.splice(start..end, s.bytes());
            b
        });
    let truncated = (Just(valid.clone()), any::<prop::sample::Index>())
        .prop_map(|(b, at)| b[..at.index(b.len())].to_vec());
    let flipped = (
        Just(valid),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    )
        .prop_map(|(mut b, edits)| {
            for (at, x) in edits {
                let i = at.index(b.len());
                b[i] = x;
            }
            b
        });
    let deep = (1usize..5000, prop::bool::ANY).prop_map(|(depth, arrays)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        format!(
            "{{\"messages\":{}1{}}}",
            open.repeat(depth),
            close.repeat(depth)
        )
        .into_bytes()
    });
    prop_oneof![
        2 => prop::collection::vec(any::<u8>(), 0..256),
        3 => mutated,
        1 => truncated,
        2 => flipped,
        1 => deep,
    ]
    .boxed()
}

proptest! {
    #![proptest_config(config(CASES_ARBITRARY))]

    #[test]
    fn arbitrary_json_bodies_are_valid_or_a_4xx(body in arbitrary_body(), chat in any::<bool>()) {
        let ep = if chat { Endpoint::Chat } else { Endpoint::Completion };
        let bytes = serde_json::to_vec(&body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let lim = limits();
        check(&edge(ep, bytes, true, &lim), &lim)?;
    }
}

proptest! {
    #![proptest_config(config(CASES_RAW))]

    #[test]
    fn raw_bytes_are_valid_or_a_4xx(
        body in raw_body(),
        chat in any::<bool>(),
        json_type in prop::bool::weighted(0.9),
    ) {
        let ep = if chat { Endpoint::Chat } else { Endpoint::Completion };
        let lim = limits();
        let result = edge(ep, body, json_type, &lim);
        check(&result, &lim)?;
        if !json_type {
            prop_assert!(matches!(result, Err(ApiError::InvalidJson(_))), "{result:?}");
        }
    }
}
