//! The shared chunk tier through the served path: a second server that shares only a Redis
//! with the first answers the same RAG request with the same text from the first one's
//! chunks (remote hits, no recomputation); with Redis killed, a third still answers 200 with
//! the same text (local compute), and counts the Redis errors and the open breaker. Document
//! ids given to `PUT /v1/chunks` or to inline documents resolve after a restart (disk tier)
//! and on another replica (Redis), and a delete on one replica deletes for the fleet.

use std::time::Duration;

use a3kv_store::RemoteConfig;
use serde_json::Value;

use crate::common::{
    ask_eiffel, base, client, lock, metric_sum, model_path, post_chat, scrape, test_config,
};

#[path = "../../../a3kv-store/tests/support/redis.rs"]
mod redis_support;

fn lookups(m: &str, tier: &str, result: &str) -> f64 {
    metric_sum(
        m,
        "a3kv:chunk_lookups_total",
        &format!("result=\"{result}\",tier=\"{tier}\""),
    ) + metric_sum(
        m,
        "a3kv:chunk_lookups_total",
        &format!("tier=\"{tier}\",result=\"{result}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_chunks_through_redis_and_survive_its_loss() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let mut redis = redis_support::Redis::start();
    let mut cfg = test_config(&model);
    cfg.engine.store.remote = Some(RemoteConfig {
        timeout_ms: 300,
        breaker_failures: 2,
        ..RemoteConfig::new(redis.url())
    });

    // Replica 1 computes the prompt's chunks and writes them behind the request.
    let h = a3kv_server::start(cfg.clone(), false)
        .await
        .expect("starts");
    let expected = ask_eiffel(h.addr).await;
    let t0 = std::time::Instant::now();
    // Prefix + two documents: a header and one value per layer each.
    while redis.keys().iter().filter(|k| k.ends_with(":h")).count() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", redis.keys());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.shutdown();
    h.wait().await.expect("clean exit");

    // Replica 2 (empty memory, no disk) finds them in Redis. (One process, one metrics
    // recorder: compare counters before and after.)
    let h = a3kv_server::start(cfg.clone(), false)
        .await
        .expect("starts");
    let before = scrape(h.addr).await;
    assert_eq!(
        ask_eiffel(h.addr).await,
        expected,
        "same answer from shared chunks"
    );
    let after = scrape(h.addr).await;
    let hits = lookups(&after, "remote", "hit") - lookups(&before, "remote", "hit");
    assert!(hits >= 3.0, "remote hits {hits}\n{after}");
    assert!(
        metric_sum(&after, "a3kv:remote_get_seconds_count", "") > 0.0,
        "remote GET latency recorded"
    );
    h.shutdown();
    h.wait().await.expect("clean exit");

    // Redis dies: replica 3 computes locally, answers the same, and says why in its metrics.
    redis.kill();
    let h = a3kv_server::start(cfg, false)
        .await
        .expect("starts without Redis");
    let before = scrape(h.addr).await;
    let t0 = std::time::Instant::now();
    assert_eq!(
        ask_eiffel(h.addr).await,
        expected,
        "same answer without Redis"
    );
    assert_eq!(ask_eiffel(h.addr).await, expected);
    assert!(t0.elapsed() < Duration::from_secs(60));
    let after = scrape(h.addr).await;
    let errors = metric_sum(&after, "a3kv:remote_errors_total", "")
        - metric_sum(&before, "a3kv:remote_errors_total", "");
    assert!(errors >= 2.0, "redis errors counted: {errors}");
    assert_eq!(metric_sum(&after, "a3kv:remote_breaker_open", ""), 1.0);
    h.shutdown();
    h.wait().await.expect("clean exit");
}

/// Chat about the Lyon document cited by id only.
async fn ask_by_id(addr: std::net::SocketAddr, id: &str) -> (u16, Value) {
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "What is Lyon known for?"}],
        "documents": [{"id": id}],
        "max_tokens": 4,
        "temperature": 0,
    });
    post_chat(addr, &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_ids_resolve_after_a_restart_and_on_other_replicas() {
    let Some(model) = model_path() else { return };
    let _g = lock().await;
    let redis = redis_support::Redis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = test_config(&model);
    cfg.engine.store.disk = Some(a3kv_store::DiskConfig {
        dir: dir.path().to_path_buf(),
        budget_bytes: 1 << 30,
    });
    cfg.engine.store.remote = Some(RemoteConfig::new(redis.url()));

    // Replica 1 stores a document by id, and a second one arrives inline with an id.
    let h = a3kv_server::start(cfg.clone(), false)
        .await
        .expect("starts");
    let r = client()
        .put(format!("{}/v1/chunks", base(h.addr)))
        .json(&serde_json::json!({"documents": [{"id": "doc-lyon", "text": "Lyon is a city in France known for its cuisine and silk."}]}))
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 200);
    let (status, first) = ask_by_id(h.addr, "doc-lyon").await;
    assert_eq!(status, 200, "{first}");
    let inline = client()
        .post(format!("{}/v1/chat/completions", base(h.addr)))
        .json(&serde_json::json!({
            "messages": [{"role": "user", "content": "Where is Nice?"}],
            "documents": [{"id": "doc-nice", "text": "Nice is a city on the French Riviera."}],
            "max_tokens": 2,
        }))
        .send()
        .await
        .expect("send");
    assert_eq!(inline.status(), 200);
    h.shutdown();
    h.wait().await.expect("clean exit");

    // Restarted on the same disk, with Redis gone: the ids resolve from the disk tier.
    let mut disk_only = cfg.clone();
    disk_only.engine.store.remote = None;
    let h = a3kv_server::start(disk_only, false)
        .await
        .expect("restarts");
    let (status, again) = ask_by_id(h.addr, "doc-lyon").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again.pointer("/choices/0/message/content"),
        first.pointer("/choices/0/message/content"),
        "same answer after the restart"
    );
    let (status, nice) = ask_by_id(h.addr, "doc-nice").await;
    assert_eq!(status, 200, "the inline document's id survives too: {nice}");
    let got = client()
        .get(format!("{}/v1/chunks/doc-lyon", base(h.addr)))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    h.shutdown();
    h.wait().await.expect("clean exit");

    // Another replica with no disk of its own: the ids resolve from Redis.
    let mut other = cfg.clone();
    other.engine.store.disk = None;
    let h = a3kv_server::start(other, false).await.expect("starts");
    let (status, there) = ask_by_id(h.addr, "doc-lyon").await;
    assert_eq!(status, 200, "{there}");
    assert_eq!(
        there.pointer("/choices/0/message/content"),
        first.pointer("/choices/0/message/content")
    );
    // Deleting it there deletes it for the fleet.
    let del = client()
        .delete(format!("{}/v1/chunks/doc-lyon", base(h.addr)))
        .send()
        .await
        .expect("delete");
    assert_eq!(del.status(), 200);
    let (status, gone) = ask_by_id(h.addr, "doc-lyon").await;
    assert_eq!(status, 404, "{gone}");
    h.shutdown();
    h.wait().await.expect("clean exit");
}
