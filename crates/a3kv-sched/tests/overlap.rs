//! Layer-wise overlap: with chunks only on disk (cold), the request's trace shows the
//! exact layers / check layer starting before the last cached layer has arrived.

mod common;

use std::time::Duration;

use a3kv_fusion::Method;
use a3kv_sched::{DocumentRef, Engine, EngineConfig, PromptSpec};
use a3kv_store::{DiskConfig, StoreConfig};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_layers_start_before_the_last_cached_layer_loads() {
    let Some(m) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        store: StoreConfig {
            remote: None,
            memory_budget_bytes: 1,
            disk: Some(DiskConfig {
                dir: dir.path().to_path_buf(),
                budget_bytes: 1 << 30,
            }),
        },
        ..config()
    };
    let engine = Engine::start(cfg, m).await.unwrap();
    // Long documents: several MB of KV per request to stream from disk.
    let docs: Vec<(Option<String>, String)> = (0..3)
        .map(|i| {
            (
                Some(format!("d{i}")),
                DOCS.iter()
                    .cycle()
                    .skip(i)
                    .take(12)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
        .collect();
    let infos = engine.put_chunks(docs, false).await.unwrap();
    assert!(
        infos.iter().all(|i| i.tier == "disk" && i.tokens > 300),
        "{infos:?}"
    );
    // A first request computes the prompt prefix (a miss) and stores it on disk, so the
    // measured request finds every part on disk.
    let warm = collect(
        engine
            .submit(rag("warm", &[0], "Where?", Method::A3, 1))
            .unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert!(warm.finish.is_ok());
    engine.store().flush().await;
    let req = a3kv_sched::GenerateRequest {
        prompt: PromptSpec::Rag {
            system: None,
            documents: (0..3).map(|i| DocumentRef::Id(format!("d{i}"))).collect(),
            question: "Which mountain is the highest?".into(),
        },
        ..rag("cold", &[], "x", Method::A3, 2)
    };
    let out = collect(engine.submit(req).unwrap(), Duration::from_secs(60)).await;
    let (_, usage) = out.finish.unwrap();
    let t = &usage.trace;
    assert!(
        t.chunk_tiers.iter().skip(1).all(|s| s == "disk"),
        "{:?}",
        t.chunk_tiers
    );
    assert_eq!(t.layer_loaded_secs.len(), 30);
    eprintln!("trace: {t:?}\nfusion: {:?}", usage.fusion);
    let check_start = t.check_start_secs.unwrap();
    let last_loaded = *t.layer_loaded_secs.last().unwrap();
    assert!(
        check_start < last_loaded,
        "layer-0/1 compute started at {check_start:.4}s, after the last cached layer ({last_loaded:.4}s): {t:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
