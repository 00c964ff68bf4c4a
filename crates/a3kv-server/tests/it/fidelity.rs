//! Fidelity features of issue #16 over HTTP: the adaptive budget (`recompute_ratio: "auto"`)
//! reports the ratio it chose within its bounds and in `a3kv:fusion_recompute_ratio_chosen`,
//! and bad adaptive settings are 400s naming the field.

use serde_json::{json, Value};

use crate::common::{lock, metric_sum, post_chat, rag_chat, scrape, shared};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_budget_reports_a_chosen_ratio_within_its_bounds() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    let chosen_name = "a3kv:fusion_recompute_ratio_chosen_count";
    let before = metric_sum(&scrape(s.addr).await, chosen_name, "");
    for (fusion, lo, hi) in [
        // The built-in bounds [0.05, 0.5], the default method (the A^3 hybrid).
        (json!({"recompute_ratio": "auto"}), 0.05, 0.5),
        (
            json!({"method": "a3", "recompute_ratio": "auto", "auto_mass": 0.9,
                   "auto_min_ratio": 0.1, "auto_max_ratio": 0.3}),
            0.1,
            0.3,
        ),
        (
            json!({"method": "cacheblend", "recompute_ratio": "auto", "auto_min_ratio": 0.2,
                   "auto_max_ratio": 0.25}),
            0.2,
            0.25,
        ),
    ] {
        let mut body = rag_chat("Where is the Eiffel Tower?", 2, false);
        body["fusion"] = fusion.clone();
        let (status, v) = post_chat(s.addr, &body).await;
        assert_eq!(status, 200, "{v}");
        let f = v.pointer("/usage/fusion").expect("usage.fusion");
        let chosen = f["recompute_ratio_chosen"]
            .as_f64()
            .unwrap_or_else(|| panic!("recompute_ratio_chosen in {f}"));
        // k / (T − Q) with k = ceil(lo·(T−Q)) ..= floor(hi·(T−Q)).
        assert!(
            chosen >= lo - 1e-9 && chosen <= hi + 1e-9,
            "{fusion}: chose {chosen}, bounds [{lo}, {hi}]"
        );
        assert!(f["recomputed_tokens"].as_u64().unwrap_or(0) >= 1, "{f}");
    }
    // A fixed ratio reports no chosen ratio.
    let (status, v) = post_chat(s.addr, &rag_chat("Where is the Eiffel Tower?", 2, false)).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v.pointer("/usage/fusion/recompute_ratio_chosen").is_none(),
        "{v}"
    );
    let after = metric_sum(&scrape(s.addr).await, chosen_name, "");
    assert_eq!(after - before, 3.0, "one histogram sample per auto request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_adaptive_budgets_are_400s_naming_the_field() {
    let Some(s) = shared() else { return };
    for (fusion, param, says) in [
        (
            json!({"recompute_ratio": "most"}),
            "fusion.recompute_ratio",
            "\"auto\"",
        ),
        (
            json!({"recompute_ratio": "auto", "auto_mass": 0}),
            "fusion.auto_mass",
            "(0, 1]",
        ),
        (
            json!({"recompute_ratio": "auto", "auto_mass": 1.5}),
            "fusion.auto_mass",
            "(0, 1]",
        ),
        (
            json!({"recompute_ratio": "auto", "auto_min_ratio": -0.1}),
            "fusion.auto_min_ratio",
            "[0, 1]",
        ),
        (
            json!({"recompute_ratio": "auto", "auto_min_ratio": 0.6, "auto_max_ratio": 0.4}),
            "fusion.auto_max_ratio",
            "below auto_min_ratio",
        ),
        (
            json!({"recompute_ratio": 0.2, "auto_mass": 0.9}),
            "fusion.auto_mass",
            "\"auto\" only",
        ),
        (
            json!({"auto_max_ratio": 0.9}),
            "fusion.auto_max_ratio",
            "\"auto\" only",
        ),
        (
            json!({"sink_tokens": "auto"}),
            "fusion.sink_tokens",
            "must be a number",
        ),
        (
            json!({"auto_mass": "auto", "recompute_ratio": "auto"}),
            "fusion.auto_mass",
            "must be a number",
        ),
        (
            json!({"recompute_ratio": "auto", "recompute_tokens": 4}),
            "fusion.recompute_tokens",
            "not both",
        ),
    ] {
        let mut body = rag_chat("Where is the Eiffel Tower?", 2, false);
        body["fusion"] = fusion.clone();
        let (status, v) = post_chat(s.addr, &body).await;
        assert_eq!(status, 400, "{fusion}: {v}");
        assert_eq!(
            v.pointer("/error/param").and_then(Value::as_str),
            Some(param),
            "{fusion}: {v}"
        );
        assert_eq!(
            v.pointer("/error/code").and_then(Value::as_str),
            Some("invalid_value"),
            "{v}"
        );
        let msg = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(msg.contains(says), "{fusion}: {msg}");
    }
}
