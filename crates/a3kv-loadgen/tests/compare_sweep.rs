//! `--compare` replays one trace per method against the same server (identical requests but
//! for `fusion.method`, ratios to the first method); `--sweep-rate` finds the highest rate
//! meeting the SLO per method and stops a method at its first failing rate.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::{args, chat_router, serve, stream_response, Received, Script};
use serde_json::Value;

const SCRIPT: Script = Script {
    first_token_delay: Duration::from_millis(5),
    token_gap: Duration::from_millis(2),
    tokens: 3,
};

#[tokio::test]
async fn compare_replays_the_same_trace_per_method() {
    let received: Received = Arc::default();
    let target = serve(chat_router(SCRIPT, Arc::clone(&received))).await;
    let a = args(
        &target,
        &[
            "--compare",
            "full,a3,cacheblend",
            "--arrival",
            "closed",
            "--concurrency",
            "1",
            "--num-requests",
            "5",
            "--docs-per-request",
            "1-3",
            "--shuffle-docs",
            "--num-docs",
            "10",
            "--doc-words",
            "20",
            "--recompute-ratio",
            "0.2",
        ],
    );
    let report = tokio::time::timeout(Duration::from_secs(10), a3kv_loadgen::run(a))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.runs.len(), 3);
    let cmp = report.compare.as_ref().unwrap();
    assert_eq!(cmp.methods, vec!["full", "a3", "cacheblend"]);
    let ttft = cmp.rows.iter().find(|r| r.metric == "TTFT p50").unwrap();
    assert_eq!(ttft.ratios[0], Some(1.0));
    assert!(
        ttft.ratios.iter().all(|r| r.is_some_and(|x| x > 0.0)),
        "{ttft:?}"
    );
    for (run, m) in report.runs.iter().zip(["full", "a3", "cacheblend"]) {
        assert_eq!(run.fusion_method.as_deref(), Some(m));
        assert_eq!(run.summary.succeeded, 5, "{:?}", run.summary.errors);
    }
    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 15);
    let strip = |b: &Value| {
        let mut b = b.clone();
        b.as_object_mut().unwrap().remove("fusion");
        b
    };
    for i in 0..5 {
        assert_eq!(bodies[i]["fusion"]["method"], "full");
        assert_eq!(bodies[5 + i]["fusion"]["method"], "a3");
        assert_eq!(bodies[10 + i]["fusion"]["recompute_ratio"], 0.2);
        assert_eq!(
            strip(&bodies[i]),
            strip(&bodies[5 + i]),
            "same trace for every method"
        );
        assert_eq!(strip(&bodies[i]), strip(&bodies[10 + i]));
    }
    assert!(report.render().contains("ratios to full"));
}

#[tokio::test]
async fn sweep_finds_the_highest_rate_meeting_the_slo() {
    // `full` is always overloaded (429); `a3` always answers.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let router = Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |State(seen): State<Arc<Mutex<Vec<String>>>>, Json(body): Json<Value>| async move {
                    let method = body["fusion"]["method"].as_str().unwrap_or("").to_string();
                    seen.lock().unwrap().push(method.clone());
                    if method == "full" {
                        StatusCode::TOO_MANY_REQUESTS.into_response()
                    } else {
                        stream_response(SCRIPT, &body)
                    }
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    let target = serve(router).await;
    let a = args(
        &target,
        &[
            "--compare",
            "full,a3",
            "--sweep-rate",
            "20,10",
            "--duration-secs",
            "0.5",
            "--slo-ttft",
            "5s",
            "--slo-attainment",
            "0.9",
            "--doc-words",
            "10",
            "--num-docs",
            "10",
        ],
    );
    let report = tokio::time::timeout(Duration::from_secs(10), a3kv_loadgen::run(a))
        .await
        .unwrap()
        .unwrap();
    let sweep = report.sweep.as_ref().unwrap();
    assert_eq!(sweep.rates, vec![10.0, 20.0]);
    let (full, a3) = (&sweep.methods[0], &sweep.methods[1]);
    assert_eq!(full.points.len(), 1, "full stops at its first failing rate");
    assert!(!full.points[0].passed && full.best_rate_per_sec.is_none());
    assert_eq!(a3.points.len(), 2);
    assert!(a3.points.iter().all(|p| p.passed), "{:?}", a3.points);
    assert_eq!(a3.best_rate_per_sec, Some(20.0));
    assert_eq!(report.runs.len(), 3);
    assert!(seen.lock().unwrap().iter().any(|m| m == "full"));
    let table = report.render();
    assert!(
        table.contains("FAIL") && table.contains("best rate"),
        "{table}"
    );
}
