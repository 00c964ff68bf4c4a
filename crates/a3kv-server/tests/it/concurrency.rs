//! Load: 32 concurrent streaming clients complete; a client that disconnects mid-stream is
//! cancelled (running gauge back to 0, counted as client_gone); the concurrency limit answers
//! 429 with Retry-After.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::common::{
    base, client, lock, metric_sum, model_path, rag_chat, read_sse, scrape, shared, streamed_text,
    test_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_streams_complete() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let c = client();
    let url = base(s.addr);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let body = rag_chat(
                    &format!("Question {i}: where is the Eiffel Tower?"),
                    4,
                    true,
                );
                let r = c
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&body)
                    .send()
                    .await
                    .expect("send");
                assert_eq!(r.status(), 200, "client {i}");
                let data = read_sse(r).await;
                assert_eq!(
                    data.last().map(String::as_str),
                    Some("[DONE]"),
                    "client {i}: {data:?}"
                );
                assert!(
                    !data.iter().any(|d| d.contains("\"error\"")),
                    "client {i}: {data:?}"
                );
                streamed_text(&data)
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    wait_idle(s.addr).await;
}

/// Waits until the running gauge reads 0 (bounded).
async fn wait_idle(addr: std::net::SocketAddr) {
    for _ in 0..600 {
        let m = scrape(addr).await;
        if metric_sum(&m, "a3kv:num_requests_running", "") == 0.0
            && metric_sum(&m, "a3kv:num_requests_waiting", "") == 0.0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("requests still running after 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_cancels_the_request() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let c = client();
    let url = base(s.addr);
    let dropped_before = metric_sum(
        &scrape(s.addr).await,
        "a3kv:request_failure_total",
        "err=\"client_gone\"",
    );
    let body = json!({
        "prompt": "Count from 1 to 1000: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
        "max_tokens": 512, "temperature": 0, "stream": true,
    });
    let r = c
        .post(format!("{url}/v1/completions"))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let first = stream.next().await.expect("a first chunk").expect("chunk");
    assert!(String::from_utf8_lossy(&first).contains("data:"));
    assert!(
        s.state.engine.running() + s.state.engine.waiting() >= 1,
        "the request runs"
    );
    drop(stream); // the client goes away mid-stream
    wait_idle(s.addr).await;
    assert_eq!(s.state.engine.running(), 0);
    let dropped_after = metric_sum(
        &scrape(s.addr).await,
        "a3kv:request_failure_total",
        "err=\"client_gone\"",
    );
    assert!(
        dropped_after > dropped_before,
        "the server counted the cancelled request as client_gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_answers_429_with_retry_after() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let mut cfg = test_config(&model);
    cfg.limits.max_concurrent_requests = 1;
    cfg.limits.retry_after_secs = 3;
    let h = a3kv_server::start(cfg, false).await.expect("server starts");
    let c = client();
    let url = base(h.addr);
    let long = json!({"prompt": "Count from 1 to 1000: 1, 2, 3,", "max_tokens": 256, "temperature": 0, "stream": true});
    let r = c
        .post(format!("{url}/v1/completions"))
        .json(&long)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    stream.next().await.expect("first chunk").expect("chunk");
    let second = c
        .post(format!("{url}/v1/completions"))
        .json(&json!({"prompt": "Hi", "max_tokens": 2}))
        .send()
        .await
        .expect("send");
    assert_eq!(second.status(), 429);
    assert_eq!(
        second
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("3")
    );
    let body: serde_json::Value = second.json().await.expect("json");
    assert_eq!(
        body["error"]["code"], "too_many_concurrent_requests",
        "{body}"
    );
    drop(stream);
    h.shutdown();
    tokio::time::timeout(Duration::from_secs(120), h.wait())
        .await
        .expect("drains")
        .expect("clean exit");
}
