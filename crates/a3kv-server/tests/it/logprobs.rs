//! `logprobs` on the real server: chat (`logprobs` + `top_logprobs`) and legacy completions
//! (`logprobs: n`), whole and streamed; shapes, one entry per completion token, greedy
//! tokens equal to their top-1 alternative, log-probabilities independent of the sampling
//! temperature, and 400s naming the field for bad values.

use serde_json::{json, Value};

use crate::common::{base, client, lock, rag_chat, read_sse, shared};

async fn post(url: &str, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .expect("send")
}

async fn post_json(url: &str, path: &str, body: &Value) -> Value {
    let r = post(url, path, body).await;
    assert_eq!(r.status(), 200, "{body}");
    r.json().await.expect("json")
}

/// The JSON chunks of an SSE response (without `[DONE]`).
async fn post_sse(url: &str, path: &str, body: &Value) -> Vec<Value> {
    let r = post(url, path, body).await;
    assert_eq!(r.status(), 200, "{body}");
    let data = read_sse(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    data.iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap_or_else(|| panic!("bytes not a list: {v}"))
        .iter()
        .map(|b| {
            b.as_u64()
                .and_then(|b| u8::try_from(b).ok())
                .unwrap_or_else(|| panic!("not a byte: {b}"))
        })
        .collect()
}

/// Checks one chat `content` entry: a token with a logprob <= 0, its bytes, `n`
/// alternatives sorted most likely first; `greedy`: the token is the top-1 alternative.
fn check_chat_entry(e: &Value, n: usize, greedy: bool) {
    assert!(e["token"].is_string(), "{e}");
    let lp = f(&e["logprob"]);
    assert!(lp <= 0.0, "{e}");
    assert_eq!(
        String::from_utf8_lossy(&bytes(&e["bytes"])),
        e["token"].as_str().unwrap_or_default(),
        "{e}"
    );
    let top = e["top_logprobs"].as_array().expect("top_logprobs list");
    assert_eq!(top.len(), n, "{e}");
    for t in top {
        assert!(t["token"].is_string() && f(&t["logprob"]) <= 0.0, "{t}");
        bytes(&t["bytes"]);
    }
    assert!(
        top.windows(2)
            .all(|w| f(&w[0]["logprob"]) >= f(&w[1]["logprob"])),
        "{e}"
    );
    if let Some(first) = top.first() {
        // The chosen token is never likelier than the most likely one.
        assert!(lp <= f(&first["logprob"]) + 1e-6, "{e}");
        if greedy {
            assert_eq!(first["token"], e["token"], "{e}");
            assert!((f(&first["logprob"]) - lp).abs() < 1e-6, "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_chat_rag_whole_and_streamed() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let url = base(s.addr);
    let mut body = rag_chat("When was the Eiffel Tower completed?", 10, false);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    let whole = post_json(&url, "/v1/chat/completions", &body).await;
    let choice = &whole["choices"][0];
    let content = choice["logprobs"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no logprobs.content: {whole}"));
    let n_tokens = whole["usage"]["completion_tokens"].as_u64().expect("usage");
    assert!(n_tokens > 0, "{whole}");
    assert_eq!(content.len() as u64, n_tokens, "{whole}");
    for e in content {
        check_chat_entry(e, 3, true);
    }
    // The tokens' bytes spell the answer.
    let spelled: Vec<u8> = content.iter().flat_map(|e| bytes(&e["bytes"])).collect();
    assert_eq!(
        String::from_utf8_lossy(&spelled),
        choice["message"]["content"].as_str().expect("content"),
        "{whole}"
    );

    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let chunks = post_sse(&url, "/v1/chat/completions", &body).await;
    let mut streamed = Vec::new();
    for c in &chunks {
        let Some(choice) = c["choices"].get(0) else {
            continue; // the usage chunk
        };
        if choice["finish_reason"].is_string() {
            assert!(choice["logprobs"].is_null(), "{c}");
            continue;
        }
        let entries = choice["logprobs"]["content"]
            .as_array()
            .unwrap_or_else(|| panic!("token chunk without logprobs: {c}"));
        assert_eq!(entries.len(), 1, "one token per chunk: {c}");
        streamed.extend(entries.iter().cloned());
    }
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(
        usage["completion_tokens"].as_u64(),
        Some(n_tokens),
        "{usage}"
    );
    assert_eq!(streamed.len(), content.len());
    for (a, b) in streamed.iter().zip(content) {
        check_chat_entry(a, 3, true);
        assert_eq!(a["token"], b["token"]);
        assert!(
            (f(&a["logprob"]) - f(&b["logprob"])).abs() < 1e-3,
            "{a} vs {b}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_chat_are_of_the_raw_distribution_and_sampled_tokens_are_reported() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let url = base(s.addr);
    let chat = |temperature: f64, top_p: f64| {
        json!({
            "messages": [{"role": "user", "content": "Write a short poem about the sea."}],
            "max_tokens": 16, "temperature": temperature, "top_p": top_p, "seed": 3,
            "logprobs": true, "top_logprobs": 5,
        })
    };
    let greedy = post_json(&url, "/v1/chat/completions", &chat(0.0, 1.0)).await;
    let hot = post_json(&url, "/v1/chat/completions", &chat(2.0, 0.95)).await;
    let g = greedy["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("greedy content");
    let h = hot["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("sampled content");
    assert_eq!(
        h.len() as u64,
        hot["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        "{hot}"
    );
    for e in g {
        check_chat_entry(e, 5, true);
    }
    for e in h {
        check_chat_entry(e, 5, false);
    }
    // Same prompt, same first position: the alternatives do not depend on temperature/top-p.
    for (a, b) in g[0]["top_logprobs"]
        .as_array()
        .expect("top")
        .iter()
        .zip(h[0]["top_logprobs"].as_array().expect("top"))
    {
        assert_eq!(a["token"], b["token"]);
        assert!(
            (f(&a["logprob"]) - f(&b["logprob"])).abs() < 1e-3,
            "{a} vs {b}"
        );
    }
    // At temperature 2 some sampled token is not the most likely one, and its own
    // log-probability is reported all the same.
    assert!(
        h.iter()
            .any(|e| e["token"] != e["top_logprobs"][0]["token"]),
        "{hot}"
    );
    // Without `logprobs` the field is null.
    let plain = post_json(
        &url,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
    )
    .await;
    assert!(plain["choices"][0]["logprobs"].is_null(), "{plain}");
}

/// Checks a completions `logprobs` object against the text and the token count.
fn check_completion_logprobs(lp: &Value, text: &str, n_tokens: u64, n: usize) {
    let tokens = lp["tokens"].as_array().expect("tokens");
    let token_logprobs = lp["token_logprobs"].as_array().expect("token_logprobs");
    let top = lp["top_logprobs"].as_array().expect("top_logprobs");
    let offsets = lp["text_offset"].as_array().expect("text_offset");
    assert_eq!(tokens.len() as u64, n_tokens, "{lp}");
    assert_eq!(token_logprobs.len(), tokens.len());
    assert_eq!(top.len(), tokens.len());
    assert_eq!(offsets.len(), tokens.len());
    let mut joined = String::new();
    for i in 0..tokens.len() {
        let tok = tokens[i].as_str().expect("token");
        assert_eq!(
            offsets[i].as_u64(),
            Some(joined.chars().count() as u64),
            "{lp}"
        );
        joined.push_str(tok);
        let lp_i = f(&token_logprobs[i]);
        let alts = top[i].as_object().expect("top dict");
        // The n alternatives plus the chosen token (greedy: the chosen one is among them).
        assert!((1..=n.max(1)).contains(&alts.len()), "{lp}");
        assert!(
            alts.get(tok).is_some_and(|x| (f(x) - lp_i).abs() < 1e-6),
            "{lp}"
        );
        let best = alts.values().map(f).fold(f64::NEG_INFINITY, f64::max);
        assert!(
            (best - lp_i).abs() < 1e-6,
            "greedy picks the likeliest: {lp}"
        );
    }
    assert_eq!(joined, text, "{lp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_completions_whole_streamed_and_with_stop() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let url = base(s.addr);
    let mut body = json!({
        "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0, "logprobs": 2,
    });
    let whole = post_json(&url, "/v1/completions", &body).await;
    let text = whole["choices"][0]["text"]
        .as_str()
        .expect("text")
        .to_string();
    let n_tokens = whole["usage"]["completion_tokens"].as_u64().expect("usage");
    assert!(n_tokens > 0, "{whole}");
    check_completion_logprobs(&whole["choices"][0]["logprobs"], &text, n_tokens, 2);

    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let chunks = post_sse(&url, "/v1/completions", &body).await;
    let mut merged =
        json!({"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []});
    let mut streamed_text = String::new();
    for c in &chunks {
        let Some(choice) = c["choices"].get(0) else {
            continue;
        };
        streamed_text.push_str(choice["text"].as_str().unwrap_or_default());
        if choice["finish_reason"].is_string() {
            assert!(choice["logprobs"].is_null(), "{c}");
            continue;
        }
        for k in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
            let part = choice["logprobs"][k].as_array().expect("chunk logprobs");
            assert_eq!(part.len(), 1, "{c}");
            merged[k]
                .as_array_mut()
                .expect("list")
                .extend(part.iter().cloned());
        }
    }
    assert_eq!(streamed_text, text);
    let usage = &chunks.last().expect("usage chunk")["usage"];
    assert_eq!(usage["completion_tokens"].as_u64(), Some(n_tokens));
    check_completion_logprobs(&merged, &text, n_tokens, 2);

    // logprobs 0: only the chosen token in each dict.
    let zero = post_json(
        &url,
        "/v1/completions",
        &json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "logprobs": 0}),
    )
    .await;
    let tops = zero["choices"][0]["logprobs"]["top_logprobs"]
        .as_array()
        .expect("tops");
    assert!(!tops.is_empty());
    assert!(
        tops.iter()
            .all(|d| d.as_object().is_some_and(|o| o.len() == 1)),
        "{zero}"
    );

    // A stop string cuts the text inside a token: one entry per emitted token still.
    let cut: String = text.chars().skip(3).take(2).collect();
    if cut.chars().count() == 2 && !cut.trim().is_empty() {
        let stopped = post_json(
            &url,
            "/v1/completions",
            &json!({"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0,
                    "logprobs": 1, "stop": [cut]}),
        )
        .await;
        let n = stopped["usage"]["completion_tokens"]
            .as_u64()
            .expect("usage");
        let lp = &stopped["choices"][0]["logprobs"];
        assert_eq!(
            lp["tokens"].as_array().map(Vec::len),
            Some(n as usize),
            "{stopped}"
        );
        assert_eq!(stopped["choices"][0]["finish_reason"], "stop", "{stopped}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_bad_values_get_400_naming_the_field() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let url = base(s.addr);
    let user = json!([{"role": "user", "content": "hi"}]);
    for (path, body, code, param) in [
        (
            "/v1/chat/completions",
            json!({"messages": user, "logprobs": true, "top_logprobs": 21}),
            "invalid_value",
            Some("top_logprobs"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "logprobs": true, "top_logprobs": -1}),
            "invalid_value",
            Some("top_logprobs"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "top_logprobs": 2}),
            "invalid_value",
            Some("top_logprobs"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": user, "logprobs": "yes"}),
            "invalid_json",
            None,
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logprobs": 6}),
            "invalid_value",
            Some("logprobs"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "logprobs": -1}),
            "invalid_value",
            Some("logprobs"),
        ),
    ] {
        let r = post(&url, path, &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: Value = r.json().await.expect("error JSON");
        assert_eq!(e["error"]["code"], code, "{body}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{e}"
        );
        if let Some(p) = param {
            assert_eq!(e["error"]["param"], p, "{body}: {e}");
        }
    }
}
