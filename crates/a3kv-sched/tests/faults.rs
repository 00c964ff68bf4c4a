//! Failure handling: a full queue rejects at once with a reason; a chunk file corrupted
//! mid-stream is recomputed and the request succeeds. (An actor fault failing only its
//! request while the actor restarts is a unit test in `src/actors/supervisor.rs`: fault
//! injection exists only in the crate's own test build.)

mod common;

use std::time::{Duration, Instant};

use a3kv_fusion::Method;
use a3kv_sched::{DocumentRef, Engine, EngineConfig, EngineError, PromptSpec};
use a3kv_store::{DiskConfig, StoreConfig};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_rejects_immediately_with_a_reason() {
    let Some(m) = model() else { return };
    let cfg = EngineConfig {
        max_running: 1,
        max_waiting: 1,
        ..config()
    };
    let engine = Engine::start(cfg, m).await.unwrap();
    let a = engine
        .submit(rag("a", &[0], "Where?", Method::A3, 24))
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || engine.running() == 1).await);
    let b = engine
        .submit(rag("b", &[1], "Where?", Method::A3, 2))
        .unwrap();
    let t0 = Instant::now();
    let c = engine.submit(rag("c", &[2], "Where?", Method::A3, 2));
    assert!(t0.elapsed() < Duration::from_millis(50));
    match c {
        Err(e @ EngineError::QueueFull { retry_after_secs }) => {
            assert!(retry_after_secs >= 1);
            assert_eq!(e.kind(), "queue_full");
            assert!(e.to_string().contains("queue full"));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    assert!(collect(a, Duration::from_secs(60)).await.finish.is_ok());
    assert!(collect(b, Duration::from_secs(60)).await.finish.is_ok());
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_file_corrupt_mid_stream_is_recomputed_and_the_request_succeeds() {
    let Some(m) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig {
        // Nothing fits in memory: every read streams from the disk file.
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
    let fp = m.model.fingerprint().to_hex();
    let engine = Engine::start(cfg, m).await.unwrap();
    let info = engine
        .put_chunks(
            vec![
                (None, DOCS[2].to_string()),
                (Some("kili".into()), DOCS[1].to_string()),
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(info[0].tier, "disk");
    let req = |id: &str, doc: &str| a3kv_sched::GenerateRequest {
        prompt: PromptSpec::Rag {
            system: None,
            documents: vec![DocumentRef::Id(doc.into())],
            question: "Where is it?".into(),
        },
        ..rag(id, &[], "x", Method::A3, 3)
    };
    let before = collect(
        engine.submit(req("before", &info[0].id)).unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert!(before.finish.is_ok(), "{:?}", before.finish);
    let file = dir.path().join(&fp).join(format!("{}.a3kv", info[0].id));
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 4096..n - 4000] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, bytes).unwrap();
    // The last layer fails its checksum after the first layers streamed: the chunk is
    // recomputed for the rest, the request answers as before, and the file is rewritten.
    let bad = engine.submit(req("bad", &info[0].id)).unwrap();
    let other = engine.submit(req("other", "kili")).unwrap();
    let out = collect(bad, Duration::from_secs(60)).await;
    assert!(out.finish.is_ok(), "{:?}", out.finish);
    assert_eq!(out.text, before.text);
    assert!(collect(other, Duration::from_secs(60)).await.finish.is_ok());
    assert!(
        wait_until(Duration::from_secs(30), || std::fs::metadata(&file)
            .map(|m| m.len() as usize == n)
            .unwrap_or(false))
        .await,
        "the recomputed chunk replaces the bad file"
    );
    // The same text inline is served from the rewritten file.
    let again = engine
        .submit(rag("again", &[2], "Where is it?", Method::A3, 3))
        .unwrap();
    assert!(collect(again, Duration::from_secs(60)).await.finish.is_ok());
    engine.shutdown(Duration::from_secs(5)).await;
}
