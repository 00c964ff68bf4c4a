//! The start-up fusion gate on the real model: with the shipped thresholds it passes (fusion at
//! ratio 1 equals full prefill, canary KLs under the limit) and fused requests run their own
//! method; with a KL limit no fusion can meet (0) it fails, says why, the gauge reads 0 and a
//! request asking for A^3 is served as a full prefill (`usage.fusion.method` = "full").

use serde_json::Value;

use crate::common::{base, client, lock, metric_sum, model_path, rag_chat, scrape, test_config};

async fn fused_method(addr: std::net::SocketAddr) -> String {
    let r = client()
        .post(format!("{}/v1/chat/completions", base(addr)))
        .json(&rag_chat("Where is the Eiffel Tower?", 2, false))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    v.pointer("/usage/fusion/method")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("usage.fusion.method in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fusion_gate_passes_on_the_model_and_closes_fusion_when_it_fails() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let cfg = test_config(&model);

    let h = a3kv_server::start(cfg.clone(), false)
        .await
        .expect("starts");
    let report = h.state.engine.gate_report().expect("the gate ran").clone();
    assert!(report.passed, "{report:?}");
    assert!(report.max_logit_diff < 1e-2, "{report:?}");
    assert_eq!(report.canary_kl.len(), 2);
    assert!(
        report.canary_kl.iter().all(|k| *k > 0.0 && *k < 1.0),
        "{report:?}"
    );
    assert_eq!(fused_method(h.addr).await, "a3");
    h.shutdown();
    h.wait().await.expect("clean exit");

    let mut strict = cfg;
    strict.engine.fusion_gate.max_kl = 0.0;
    let h = a3kv_server::start(strict, false).await.expect("starts");
    let report = h.state.engine.gate_report().expect("the gate ran").clone();
    assert!(!report.passed);
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("exceeds max_kl 0")),
        "{report:?}"
    );
    assert_eq!(
        metric_sum(&scrape(h.addr).await, "a3kv:fusion_gate_state", ""),
        0.0
    );
    assert_eq!(fused_method(h.addr).await, "full", "served exactly");
    h.shutdown();
    h.wait().await.expect("clean exit");
}
