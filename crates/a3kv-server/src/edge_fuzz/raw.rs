//! Arbitrary JSON (known and random keys, any values, nesting) and raw bytes (random, mutated
//! valid bodies, numbers JSON cannot hold, lone surrogates, deep nesting, no content type):
//! no oracle, only "a valid request or a well-formed 4xx".

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use super::{check, config, edge, limits, Endpoint, CASES_ARBITRARY, CASES_RAW, MODEL};
use crate::error::ApiError;

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
