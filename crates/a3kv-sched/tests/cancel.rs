//! Cancellation: dropping a request's stream mid-generation stops its decoding at the next
//! step and brings the `a3kv:num_requests_running` gauge back to 0 (read from a metrics
//! recorder installed for this test binary alone).

mod common;

use std::time::{Duration, Instant};

use a3kv_fusion::Method;
use a3kv_sched::{Engine, EngineEvent, PromptSpec};
use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn read(snap: &Snapshotter, name: &str) -> Option<f64> {
    snap.snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, ..)| k.key().name() == name)
        .map(|(.., v)| match v {
            DebugValue::Counter(c) => c as f64,
            DebugValue::Gauge(g) => g.0,
            DebugValue::Histogram(h) => h.len() as f64,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_decoding_and_the_running_gauge_returns_to_zero() {
    let Some(m) = model() else { return };
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    recorder.install().expect("first recorder of this binary");
    a3kv_sched::describe_metrics();
    let engine = Engine::start(config(), m).await.unwrap();
    // Counting never ends on its own within 256 greedy tokens.
    let req = a3kv_sched::GenerateRequest {
        prompt: PromptSpec::Text {
            prompt: "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,".into(),
        },
        ..rag("cancel", &[], "x", Method::Full, 256)
    };
    let mut rx = engine.submit(req).unwrap();
    let first = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .unwrap();
    assert!(
        matches!(first, Some(EngineEvent::Token { .. })),
        "{first:?}"
    );
    assert_eq!(read(&snap, a3kv_sched::metrics::RUNNING), Some(1.0));
    drop(rx);
    let t0 = Instant::now();
    while engine.running() > 0 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.running(), 0);
    assert_eq!(read(&snap, a3kv_sched::metrics::RUNNING), Some(0.0));
    let generated = read(&snap, a3kv_sched::metrics::GENERATION_TOKENS).unwrap_or(0.0);
    assert!(
        generated < 32.0,
        "{generated} tokens generated after the client left"
    );
    // The engine still serves.
    let ok = engine
        .submit(rag("after", &[0], "Where?", Method::A3, 2))
        .unwrap();
    assert!(collect(ok, Duration::from_secs(60)).await.finish.is_ok());
    // Histograms drain on each snapshot: the second request recorded its TTFT.
    assert!(read(&snap, a3kv_sched::metrics::TTFT).unwrap_or(0.0) >= 1.0);
    engine.shutdown(Duration::from_secs(5)).await;
}
