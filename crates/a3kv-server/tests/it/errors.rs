//! Bad inputs get the right 4xx and OpenAI error JSON, and the server keeps serving.

use serde_json::{json, Value};

use crate::common::{base, client, lock, shared};

struct Case {
    name: &'static str,
    path: &'static str,
    body: String,
    status: u16,
    code: &'static str,
    param: Option<&'static str>,
}

fn case(
    name: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
    code: &'static str,
    param: Option<&'static str>,
) -> Case {
    Case {
        name,
        path,
        body: body.to_string(),
        status,
        code,
        param,
    }
}

fn user(content: &str) -> Value {
    json!([{"role": "user", "content": content}])
}

fn cases() -> Vec<Case> {
    let chat = "/v1/chat/completions";
    let mut v = vec![
        Case {
            name: "malformed json",
            path: chat,
            body: "{\"messages\": [".into(),
            status: 400,
            code: "invalid_json",
            param: None,
        },
        case(
            "messages wrong type",
            chat,
            json!({"messages": "hi"}),
            400,
            "invalid_json",
            None,
        ),
        case(
            "content wrong type",
            chat,
            json!({"messages": [{"role": "user", "content": 5}]}),
            400,
            "invalid_value",
            Some("messages[0].content"),
        ),
        case(
            "bad role",
            chat,
            json!({"messages": [{"role": "robot", "content": "hi"}]}),
            400,
            "invalid_value",
            Some("messages[0].role"),
        ),
        case(
            "empty messages",
            chat,
            json!({"messages": []}),
            400,
            "invalid_value",
            Some("messages"),
        ),
        case(
            "unknown model",
            chat,
            json!({"model": "gpt-17", "messages": user("hi")}),
            404,
            "model_not_found",
            Some("model"),
        ),
        case(
            "unknown chunk id",
            chat,
            json!({"messages": user("hi"), "documents": [{"id": "no-such-doc"}]}),
            404,
            "chunk_not_found",
            Some("documents"),
        ),
        case(
            "empty document",
            chat,
            json!({"messages": user("hi"), "documents": [{}]}),
            400,
            "invalid_value",
            Some("documents[0]"),
        ),
        case(
            "too many documents",
            chat,
            json!({"messages": user("hi"), "documents": (0..5).map(|i| json!({"text": format!("doc {i}")})).collect::<Vec<_>>()}),
            413,
            "too_many_documents",
            Some("documents"),
        ),
        case(
            "negative max_tokens",
            chat,
            json!({"messages": user("hi"), "max_tokens": -1}),
            400,
            "invalid_value",
            Some("max_tokens"),
        ),
        case(
            "huge max_tokens",
            chat,
            json!({"messages": user("hi"), "max_tokens": 1_000_000_000u64}),
            400,
            "invalid_value",
            Some("max_tokens"),
        ),
        case(
            "max_tokens wrong type",
            chat,
            json!({"messages": user("hi"), "max_tokens": "ten"}),
            400,
            "invalid_json",
            None,
        ),
        case(
            "bad temperature",
            chat,
            json!({"messages": user("hi"), "temperature": 7.5}),
            400,
            "invalid_value",
            Some("temperature"),
        ),
        case(
            "bad top_p",
            chat,
            json!({"messages": user("hi"), "top_p": 0}),
            400,
            "invalid_value",
            Some("top_p"),
        ),
        case(
            "bad fusion method",
            chat,
            json!({"messages": user("hi"), "documents": [{"text": "x y z"}], "fusion": {"method": "magic"}}),
            400,
            "invalid_value",
            Some("fusion.method"),
        ),
        case(
            "ratio above 1",
            chat,
            json!({"messages": user("hi"), "documents": [{"text": "x y z"}], "fusion": {"method": "a3", "recompute_ratio": 1.5}}),
            400,
            "invalid_value",
            Some("fusion.recompute_ratio"),
        ),
        case(
            "negative ratio",
            chat,
            json!({"messages": user("hi"), "documents": [{"text": "x y z"}], "fusion": {"recompute_ratio": -0.1}}),
            400,
            "invalid_value",
            Some("fusion.recompute_ratio"),
        ),
        case(
            "hybrid weight on a method other than a3",
            chat,
            json!({"messages": user("hi"), "documents": [{"text": "x y z"}], "fusion": {"method": "epic", "hybrid_weight": 0.5}}),
            400,
            "invalid_value",
            Some("fusion.hybrid_weight"),
        ),
        case(
            "ratio and token budget together",
            chat,
            json!({"messages": user("hi"), "documents": [{"text": "x y z"}], "fusion": {"recompute_ratio": 0.1, "recompute_tokens": 3}}),
            400,
            "invalid_value",
            Some("fusion.recompute_tokens"),
        ),
        case(
            "unknown fusion key",
            chat,
            json!({"messages": user("hi"), "fusion": {"ratio": 0.2}}),
            400,
            "invalid_value",
            Some("fusion.ratio"),
        ),
        case(
            "n = 2",
            chat,
            json!({"messages": user("hi"), "n": 2}),
            400,
            "invalid_value",
            Some("n"),
        ),
        case(
            "too many stops",
            chat,
            json!({"messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}),
            400,
            "invalid_value",
            Some("stop"),
        ),
        case(
            "prompt wrong type",
            "/v1/completions",
            json!({"prompt": 42}),
            400,
            "invalid_value",
            Some("prompt"),
        ),
        case(
            "empty prompt",
            "/v1/completions",
            json!({"prompt": ""}),
            400,
            "invalid_value",
            Some("prompt"),
        ),
        case(
            "prompt over limit",
            "/v1/completions",
            json!({"prompt": "alpha beta gamma delta ".repeat(400), "max_tokens": 1}),
            413,
            "context_length_exceeded",
            None,
        ),
        case(
            "chat prompt over limit",
            chat,
            json!({"messages": user(&"alpha beta gamma delta ".repeat(400)), "max_tokens": 1}),
            413,
            "context_length_exceeded",
            None,
        ),
        case(
            "empty chunk put",
            "/v1/chunks",
            json!({"documents": []}),
            400,
            "invalid_value",
            Some("documents"),
        ),
    ];
    v.push(Case {
        name: "body over limit",
        path: chat,
        body: json!({"messages": user(&"x".repeat(100 << 10))}).to_string(),
        status: 413,
        code: "body_too_large",
        param: None,
    });
    v
}

fn check_error_shape(name: &str, body: &Value, code: &str, param: Option<&str>) {
    let e = body
        .get("error")
        .unwrap_or_else(|| panic!("{name}: no error object in {body}"));
    assert!(
        e.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "{name}: {body}"
    );
    assert!(
        e.get("type").and_then(Value::as_str).is_some(),
        "{name}: {body}"
    );
    assert!(
        e.get("param").is_some(),
        "{name}: param key missing: {body}"
    );
    assert_eq!(
        e.get("code").and_then(Value::as_str),
        Some(code),
        "{name}: {body}"
    );
    if let Some(p) = param {
        assert_eq!(
            e.get("param").and_then(Value::as_str),
            Some(p),
            "{name}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_openai_errors_and_server_keeps_serving() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let c = client();
    let url = base(s.addr);
    for case in cases() {
        let method = if case.path == "/v1/chunks" {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let r = c
            .request(method, format!("{url}{}", case.path))
            .header("content-type", "application/json")
            .body(case.body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(r.status().as_u16(), case.status, "{}", case.name);
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: error body is not JSON: {e}", case.name));
        check_error_shape(case.name, &body, case.code, case.param);
    }
    // Missing content type, unknown routes and chunk ids, wrong method: JSON errors too.
    let r = c
        .post(format!("{url}/v1/chat/completions"))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    for (method, path, status, code) in [
        (
            reqwest::Method::GET,
            "/v1/chunks/no-such-doc",
            404,
            "chunk_not_found",
        ),
        (
            reqwest::Method::DELETE,
            "/v1/chunks/no-such-doc",
            404,
            "chunk_not_found",
        ),
        (reqwest::Method::GET, "/v1/nothing-here", 404, "not_found"),
        (
            reqwest::Method::GET,
            "/v1/models/gpt-17",
            404,
            "model_not_found",
        ),
    ] {
        let r = c
            .request(method, format!("{url}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), status, "{path}");
        let body: Value = r.json().await.expect("json");
        check_error_shape(path, &body, code, None);
    }
    // Still serving: health, models, and a real generation.
    assert_eq!(
        c.get(format!("{url}/health"))
            .send()
            .await
            .expect("health")
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{url}/ready"))
            .send()
            .await
            .expect("ready")
            .status(),
        200
    );
    let models: Value = c
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    let name = models["data"][0]["id"]
        .as_str()
        .expect("model id")
        .to_string();
    let r = c
        .post(format!("{url}/v1/chat/completions"))
        .json(
            &json!({"model": name, "messages": user("Say hi."), "max_tokens": 4, "temperature": 0}),
        )
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert!(
        body["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| (1..=4).contains(&n)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_api_roundtrip() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let c = client();
    let url = base(s.addr);
    let r = c
        .put(format!("{url}/v1/chunks"))
        .json(&json!({"documents": [{"id": "doc-lyon", "text": "Lyon is a city in France known for its cuisine."}], "pin": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["data"][0]["id"], "doc-lyon", "{body}");
    assert!(
        body["data"][0]["tokens"].as_u64().is_some_and(|n| n > 0),
        "{body}"
    );
    let got: Value = c
        .get(format!("{url}/v1/chunks/doc-lyon"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(got["pinned"], true, "{got}");
    // A stored document is usable by id.
    let r = c
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"messages": user("What is Lyon known for?"), "documents": [{"id": "doc-lyon"}], "max_tokens": 3, "temperature": 0}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["usage"]["fusion"]["reused_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{body}"
    );
    // A token budget recomputes exactly that many more document rows.
    let mut recomputed = Vec::new();
    for n in [0, 5] {
        let r = c
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"messages": user("What is Lyon known for?"), "documents": [{"id": "doc-lyon"}],
                "max_tokens": 1, "fusion": {"method": "a3", "recompute_tokens": n, "sink_tokens": 0}}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("json");
        let fusion = &body["usage"]["fusion"];
        recomputed.push(fusion["recomputed_tokens"].as_u64().expect("count"));
        // The default's hybrid weight stays (same method); no sink tokens were asked for.
        assert_eq!(fusion["hybrid_weight"], 0.5, "{body}");
        assert!(fusion.get("sink_tokens").is_none(), "{body}");
    }
    assert_eq!(recomputed[1], recomputed[0] + 5, "{recomputed:?}");
    let r = c
        .delete(format!("{url}/v1/chunks/doc-lyon"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{url}/v1/chunks/doc-lyon"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
}
