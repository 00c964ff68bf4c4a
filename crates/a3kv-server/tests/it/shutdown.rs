//! Graceful shutdown on a real SIGTERM: the in-flight stream completes, new connections are
//! refused, and the server returns cleanly.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::common::{base, client, lock, model_path, sse_data, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_and_refuses_new_connections() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let h = a3kv_server::start(test_config(&model), true)
        .await
        .expect("server starts");
    let addr = h.addr;
    let c = client();
    let body = json!({"prompt": "Count from 1 to 100: 1, 2, 3,", "max_tokens": 24, "temperature": 0, "stream": true});
    let r = c
        .post(format!("{}/v1/completions", base(addr)))
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut text =
        String::from_utf8_lossy(&stream.next().await.expect("first chunk").expect("chunk"))
            .to_string();

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());

    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "new connections must be refused after SIGTERM");

    // The in-flight stream still completes.
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
    }
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(
        data.iter().any(|d| d.contains("\"finish_reason\":\"")),
        "{data:?}"
    );

    tokio::time::timeout(Duration::from_secs(120), h.wait())
        .await
        .expect("drains in time")
        .expect("clean exit");
}

/// Requests still running when `shutdown.drain_secs` passes are cut with 503
/// `shutting_down` (a final SSE error event for a stream that already started), every
/// connection gets its answer, and the server returns soon after the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_running_requests_with_503_shutting_down() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let mut cfg = test_config(&model);
    cfg.shutdown.drain_secs = 1;
    let h = a3kv_server::start(cfg, false).await.expect("server starts");
    let (addr, state) = (h.addr, h.state.clone());
    let c = client();
    let long = |stream: bool| {
        json!({"prompt": "Count from 1 to 1000: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
               "max_tokens": 512, "temperature": 0, "stream": stream})
    };
    let before = state.prometheus.render();
    let streamed = c
        .post(format!("{}/v1/completions", base(addr)))
        .json(&long(true))
        .send()
        .await
        .expect("send");
    assert_eq!(streamed.status(), 200);
    let mut stream = streamed.bytes_stream();
    let mut text =
        String::from_utf8_lossy(&stream.next().await.expect("first chunk").expect("chunk"))
            .to_string();
    let whole = tokio::spawn({
        let (c, url) = (c.clone(), format!("{}/v1/completions", base(addr)));
        let body = long(false);
        async move { c.post(url).json(&body).send().await }
    });
    // Let the second request start running before the shutdown.
    for _ in 0..200 {
        if state.engine.running() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let t0 = std::time::Instant::now();
    h.shutdown();
    let waited = tokio::spawn(async move {
        let r = h.wait().await;
        (r, t0.elapsed())
    });

    let r = whole
        .await
        .expect("join")
        .expect("the whole request gets a response");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.expect("json error");
    assert_eq!(v["error"]["code"], "shutting_down", "{v}");

    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
            Err(e) => panic!("the stream must end with an event, not a reset: {e}"),
        }
    }
    let data = sse_data(&text);
    let last = data.last().expect("events");
    let v: serde_json::Value = serde_json::from_str(last).expect("a JSON error event last");
    assert_eq!(v["error"]["code"], "shutting_down", "{data:?}");

    let (r, secs) = waited.await.expect("join");
    r.expect("clean exit");
    eprintln!("drain deadline 1 s: server returned after {secs:?}");
    assert!(
        secs < Duration::from_millis(2500),
        "the server returns soon after the 1-s deadline, took {secs:?}"
    );
    let after = state.prometheus.render();
    let cut = |m: &str| {
        crate::common::metric_sum(m, "a3kv:request_failure_total", "err=\"shutting_down\"")
    };
    assert!(
        cut(&after) - cut(&before) >= 2.0,
        "both cut requests counted"
    );
}
