//! Generators of one field's values for near-valid bodies, each value with its [`Class`]:
//! valid, of a wrong JSON type, or of a bad value (out of range, empty, too long, unknown
//! name), including huge and negative numbers, unicode, long lists and bad `fusion` objects.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::MODEL;

/// How a generated field value fares: fine, rejected by deserialisation (`invalid_json`),
/// or rejected by validation (another 4xx). Ordered: the worst field decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Class {
    /// Accepted.
    Ok,
    /// Rejected by validation (a 4xx other than `invalid_json`).
    BadValue,
    /// Rejected by deserialisation (`invalid_json`).
    BadType,
}

pub(super) type Gen = BoxedStrategy<(Value, Class)>;

pub(super) fn pick(options: Vec<(Value, Class)>) -> Gen {
    prop::sample::select(options).boxed()
}

pub(super) fn ok(v: Value) -> (Value, Class) {
    (v, Class::Ok)
}

pub(super) fn bad_value(v: Value) -> (Value, Class) {
    (v, Class::BadValue)
}

pub(super) fn bad_type(v: Value) -> (Value, Class) {
    (v, Class::BadType)
}

/// Values of the wrong JSON type for any scalar field.
pub(super) fn wrong_types() -> Vec<(Value, Class)> {
    vec![
        bad_type(json!([])),
        bad_type(json!({})),
        bad_type(json!({"nested": {"deeper": [1, 2, 3]}})),
    ]
}

/// Wrong types for a number field: the above plus numbers spelled as strings.
pub(super) fn not_numbers() -> Vec<(Value, Class)> {
    let mut v = wrong_types();
    v.extend([
        bad_type(json!("NaN")),
        bad_type(json!("Infinity")),
        bad_type(json!("1")),
    ]);
    v
}

pub(super) fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-zA-Z0-9?.,][a-zA-Z0-9 ?.,]{0,39}",
        1 => any::<String>().prop_filter("non-blank", |s| !s.trim().is_empty()),
        1 => Just("naïve 東京 🚀 \u{202e}rtl\u{0000}nul".to_string()),
        1 => (1usize..5_000).prop_map(|n| "w ".repeat(n)),
    ]
    .boxed()
}

/// `max_tokens` / `max_completion_tokens` (default limit 1024).
pub(super) fn token_count() -> Gen {
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

pub(super) fn temperature() -> Gen {
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

pub(super) fn top_p() -> Gen {
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

pub(super) fn seed() -> Gen {
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

pub(super) fn stop() -> Gen {
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

pub(super) fn stream() -> Gen {
    pick(vec![
        ok(json!(true)),
        ok(json!(false)),
        bad_type(json!("true")),
        bad_type(json!(1)),
        bad_type(Value::Null),
    ])
}

pub(super) fn stream_options() -> Gen {
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

pub(super) fn n() -> Gen {
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

pub(super) fn model() -> Gen {
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
pub(super) fn document() -> Gen {
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
pub(super) fn documents() -> BoxedStrategy<(Value, Class, usize)> {
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
pub(super) fn fusion() -> Gen {
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
            bad_type(json!("Auto")),
            bad_type(json!(true)),
        ])
        .prop_map(|v| vec![("recompute_ratio", v)]),
        // The adaptive budget and its settings.
        2 => prop::sample::select(vec![
            vec![("recompute_ratio", ok(json!("auto")))],
            vec![
                ("recompute_ratio", ok(json!("auto"))),
                ("auto_mass", ok(json!(0.9))),
                ("auto_max_ratio", ok(json!(0.3))),
            ],
            vec![
                ("recompute_ratio", ok(json!("auto"))),
                ("auto_mass", bad_value(json!(0))),
            ],
            vec![
                ("recompute_ratio", ok(json!("auto"))),
                ("auto_min_ratio", bad_value(json!(1.5))),
            ],
            vec![
                ("recompute_ratio", ok(json!("auto"))),
                ("auto_mass", bad_type(json!("auto"))),
            ],
        ]),
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
            // The fusion crate parses the object's fields itself (`FusionParams::apply`): a
            // field of the wrong JSON type is a 400 naming `fusion.<field>`, not `invalid_json`.
            let method = method.map(|(v, c)| (v, c.min(Class::BadValue)));
            let budget: Vec<_> = budget
                .into_iter()
                .map(|(k, (v, c))| (k, (v, c.min(Class::BadValue))))
                .collect();
            let sink = sink.map(|(v, c)| (v, c.min(Class::BadValue)));
            let hybrid = hybrid.map(|(v, c)| (v, c.min(Class::BadValue)));
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
                obj.insert("ratio".into(), json!(0.2));
                class = class.max(Class::BadValue);
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
pub(super) fn messages() -> BoxedStrategy<(Value, Option<Class>)> {
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

pub(super) fn prompt() -> Gen {
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
pub(super) fn unknown_fields() -> BoxedStrategy<Vec<(String, Value)>> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "ignore_eos",
            "logit_bias",
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
