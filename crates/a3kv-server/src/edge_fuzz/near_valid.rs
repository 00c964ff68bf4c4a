//! Near-valid bodies for both endpoints, assembled from [`super::fields`], and the oracle:
//! the worst field decides whether the edge must accept the body, answer `invalid_json`, or
//! answer another 4xx; an accepted body must ask for what it said.

use a3kv_sched::PromptSpec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value};

use super::fields::{
    documents, fusion, messages, model, n, prompt, seed, stop, stream, stream_options, temperature,
    token_count, top_p, unknown_fields, Class, Gen,
};
use super::{check, config, edge, limits, Endpoint, CASES_NEAR_VALID};
use crate::openai::EdgeLimits;

/// A near-valid body: its JSON, the worst class of its fields and its number of documents.
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
