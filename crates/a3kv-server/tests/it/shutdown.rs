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
