//! The remote tier against a real `redis-server` on 127.0.0.1 (Debian `redis-server`, installed
//! by `scripts/setup.sh`): stores that share only the Redis see each other's chunks bit-exact,
//! streamed layer by layer; damaged, truncated or evicted values are misses that get
//! recomputed and rewritten; a fleet of stores computes a new chunk once; a Redis that is down
//! or killed never fails a lookup or a computation, the circuit breaker opens and closes again.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use a3kv_store::{
    ChunkId, ChunkKvData, ChunkStore, DiskConfig, KvDtype, KvMeta, KvVec, LayerKv, RemoteConfig,
    Source, StoreConfig, Tier,
};

#[path = "support/redis.rs"]
mod support;
use support::{free_port, Redis};

const FP: [u8; 32] = [0x5a; 32];

fn remote(url: &str) -> RemoteConfig {
    RemoteConfig {
        timeout_ms: 200,
        lease_wait_ms: 5_000,
        breaker_failures: 2,
        breaker_cooldown_ms: 300,
        ..RemoteConfig::new(url)
    }
}

async fn store(remote_cfg: RemoteConfig, disk: Option<&Path>) -> ChunkStore {
    let cfg = StoreConfig {
        memory_budget_bytes: 1 << 30,
        disk: disk.map(|d| DiskConfig {
            dir: d.to_path_buf(),
            budget_bytes: 1 << 30,
        }),
        remote: Some(remote_cfg),
    };
    ChunkStore::open(&cfg, FP).await.unwrap()
}

/// A deterministic chunk: 4 layers, 2 KV heads, 8 tokens, d = 4; values depend on `seed`.
fn chunk(seed: u32) -> ChunkKvData {
    let (layers, heads, tokens, dim) = (4u32, 2u32, 8u32, 4u32);
    let n = (heads * tokens * dim) as usize;
    let val = |l: u32, kv: u32, i: usize| {
        f32::from_bits(
            0x3f80_0000 ^ (seed.wrapping_mul(2654435761) ^ (l << 20) ^ (kv << 19) ^ i as u32),
        )
    };
    ChunkKvData {
        meta: KvMeta {
            fingerprint: FP,
            dtype: KvDtype::F32,
            n_layers: layers,
            n_kv_heads: heads,
            head_dim: dim,
            n_tokens: tokens,
            token_ids: (0..tokens).map(|t| seed * 100 + t).collect(),
        },
        layers: (0..layers)
            .map(|l| {
                Arc::new(LayerKv {
                    k: (0..n).map(|i| val(l, 0, i)).collect(),
                    v: (0..n).map(|i| val(l, 1, i)).collect(),
                })
            })
            .collect(),
    }
}

fn bit_equal(a: &ChunkKvData, b: &ChunkKvData) -> bool {
    let bits = |v: &KvVec| v.as_bytes().to_vec();
    a.meta == b.meta
        && a.layers.len() == b.layers.len()
        && a.layers
            .iter()
            .zip(&b.layers)
            .all(|(x, y)| bits(&x.k) == bits(&y.k) && bits(&x.v) == bits(&y.v))
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_chunks_bit_exact_and_streamed() {
    let redis = Redis::start();
    let (a, b) = (
        store(remote(&redis.url()), None).await,
        store(remote(&redis.url()), None).await,
    );
    let id = ChunkId::new([1; 32]);
    let data = chunk(1);
    let put = a.put(id, data.clone(), false).await.unwrap();
    assert!(put.memory && put.remote && !put.disk, "{put:?}");
    // The header and one value per layer, under the model's fingerprint.
    let keys = redis.keys();
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(keys
        .iter()
        .all(|k| k.starts_with(&format!("a3kv:v1:{}:", "5a".repeat(32)))));

    let (got, tier) = b
        .get(&id)
        .await
        .unwrap()
        .expect("replica b reads a's chunk");
    assert_eq!(tier, Tier::Remote);
    assert!(bit_equal(&got, &data));
    // Promoted into b's memory.
    assert_eq!(
        b.get(&id).await.unwrap().map(|(_, t)| t),
        Some(Tier::Memory)
    );

    let c = store(remote(&redis.url()), None).await;
    let mut s = c
        .stream_layers(&id)
        .await
        .unwrap()
        .expect("streamed from redis");
    assert_eq!(s.tier, Tier::Remote);
    for l in 0..4 {
        let (i, layer) = s.next().await.unwrap().unwrap();
        assert_eq!(i, l);
        assert_eq!(layer.k, data.layers[l].k);
    }
    assert!(s.next().await.is_none());
    let snap = c.stats().remote.unwrap();
    assert_eq!(
        (snap.stats.hits, snap.corrupt, snap.breaker_open),
        (1, 0, false)
    );

    // A replica with a disk tier writes a remote hit back to disk: after Redis loses it, the
    // chunk is still a local hit.
    let dir = tempfile::tempdir().unwrap();
    let d = store(remote(&redis.url()), Some(dir.path())).await;
    assert_eq!(
        d.get(&id).await.unwrap().map(|(_, t)| t),
        Some(Tier::Remote)
    );
    assert_eq!(d.tier_of(&id), Some(Tier::Memory));
    assert!(d.remove(&id).await.unwrap());
    assert!(
        redis.keys().is_empty(),
        "remove deletes the remote keys too"
    );
    assert!(d.get(&id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_truncated_or_evicted_values_are_misses_and_get_rewritten() {
    let redis = Redis::start();
    let writer = store(remote(&redis.url()), None).await;
    let data = chunk(2);
    let layer_key = |id: &ChunkId, l: usize| format!("a3kv:v1:{}:{id}:l{l}", "5a".repeat(32));
    let header_key = |id: &ChunkId| format!("a3kv:v1:{}:{id}:h", "5a".repeat(32));
    type Damage = fn(&mut redis::Connection, &str, &str);
    let damages: [(&str, Damage); 5] = [
        ("flip a layer byte", |c, _h, l| {
            let mut v: Vec<u8> = redis::cmd("GET").arg(l).query(c).unwrap();
            v[7] ^= 0x40;
            redis::cmd("SET").arg(l).arg(v).query::<()>(c).unwrap();
        }),
        ("truncate a layer", |c, _h, l| {
            let mut v: Vec<u8> = redis::cmd("GET").arg(l).query(c).unwrap();
            v.truncate(v.len() / 2);
            redis::cmd("SET").arg(l).arg(v).query::<()>(c).unwrap();
        }),
        ("evict a layer", |c, _h, l| {
            redis::cmd("DEL").arg(l).query::<()>(c).unwrap();
        }),
        ("flip a header byte", |c, h, _l| {
            let mut v: Vec<u8> = redis::cmd("GET").arg(h).query(c).unwrap();
            v[50] ^= 1;
            redis::cmd("SET").arg(h).arg(v).query::<()>(c).unwrap();
        }),
        ("garbage header", |c, h, _l| {
            redis::cmd("SET")
                .arg(h)
                .arg("not a header")
                .query::<()>(c)
                .unwrap();
        }),
    ];
    let mut con = redis.con().unwrap();
    for (i, (what, damage)) in damages.iter().enumerate() {
        let id = ChunkId::new([10 + i as u8; 32]);
        writer.put(id, data.clone(), false).await.unwrap();
        damage(&mut con, &header_key(&id), &layer_key(&id, 2));

        // A fresh replica: `get` is a miss, counted as corrupt, the keys are gone.
        let reader = store(remote(&redis.url()), None).await;
        assert!(reader.get(&id).await.unwrap().is_none(), "{what}: a miss");
        let snap = reader.stats().remote.unwrap();
        assert_eq!(snap.corrupt, 1, "{what}: {snap:?}");
        let left: Vec<String> = redis
            .keys()
            .into_iter()
            .filter(|k| k.contains(&id.to_string()))
            .collect();
        assert!(left.is_empty(), "{what}: bad chunk deleted, left {left:?}");

        // Recomputed through the single flight, written back, and read exactly by the next.
        let fresh = data.clone();
        let (_, src) = reader
            .get_or_compute(id, move || Ok::<_, Never>(fresh))
            .await
            .unwrap();
        assert_eq!(src, Source::Computed, "{what}");
        reader.flush().await;
        let next = store(remote(&redis.url()), None).await;
        let (got, tier) = next.get(&id).await.unwrap().expect("rewritten");
        assert_eq!(tier, Tier::Remote, "{what}");
        assert!(bit_equal(&got, &data), "{what}");
    }

    // Mid-stream damage: layers before it arrive exact, then one error, then the end.
    let id = ChunkId::new([99; 32]);
    writer.put(id, data.clone(), false).await.unwrap();
    let reader = store(remote(&redis.url()), None).await;
    // Evicted after the header was written: the header still opens the stream (deleted before
    // the stream starts, so the reader cannot have fetched the layer already).
    redis::cmd("DEL")
        .arg(layer_key(&id, 2))
        .query::<()>(&mut con)
        .unwrap();
    let mut s = reader.stream_layers(&id).await.unwrap().expect("header ok");
    for l in 0..2 {
        let (i, layer) = s.next().await.unwrap().unwrap();
        assert_eq!((i, &layer.v), (l, &data.layers[l].v));
    }
    assert!(s.next().await.unwrap().is_err(), "layer 2 missing");
    assert!(s.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_computes_a_new_chunk_once() {
    let redis = Redis::start();
    let computations = Arc::new(AtomicUsize::new(0));
    let mut replicas = Vec::new();
    for _ in 0..4 {
        replicas.push(store(remote(&redis.url()), None).await);
    }
    let id = ChunkId::new([42; 32]);
    let data = chunk(42);
    let tasks: Vec<_> = replicas
        .iter()
        .map(|s| {
            let (s, n, d) = (s.clone(), computations.clone(), data.clone());
            tokio::spawn(async move {
                s.get_or_compute(id, move || {
                    n.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(400));
                    Ok::<_, Never>(d)
                })
                .await
            })
        })
        .collect();
    let mut sources = Vec::new();
    for t in tasks {
        let (got, src) = t.await.unwrap().unwrap();
        assert!(bit_equal(&got, &data));
        sources.push(src);
    }
    assert_eq!(
        computations.load(Ordering::SeqCst),
        1,
        "sources {sources:?}"
    );
    assert_eq!(
        sources.iter().filter(|s| **s == Source::Computed).count(),
        1
    );
    assert_eq!(sources.iter().filter(|s| **s == Source::Remote).count(), 3);
    let waited: u64 = replicas
        .iter()
        .map(|s| s.stats().remote.unwrap().lease_waits_hit)
        .sum();
    assert_eq!(waited, 3);
    // The lease is released once the chunk is written.
    for s in &replicas {
        s.flush().await;
    }
    assert!(
        !redis.keys().iter().any(|k| k.ends_with(":lease")),
        "{:?}",
        redis.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_never_fails_and_the_breaker_recovers() {
    // Nothing listens on the port yet.
    let port = free_port();
    let s = store(remote(&format!("redis://127.0.0.1:{port}")), None).await;
    let t0 = Instant::now();
    for i in 0..6u8 {
        let id = ChunkId::new([i; 32]);
        assert!(s.get(&id).await.unwrap().is_none());
        let d = chunk(u32::from(i));
        let (got, src) = s
            .get_or_compute(id, move || Ok::<_, Never>(d))
            .await
            .unwrap();
        assert_eq!(src, Source::Computed);
        assert_eq!(got.meta.token_ids[0], u32::from(i) * 100);
        let put = s
            .put(ChunkId::new([100 + i; 32]), chunk(7), false)
            .await
            .unwrap();
        assert!(put.memory && !put.remote);
    }
    s.flush().await;
    // Refused connections fail fast; with the breaker open most calls are not even made.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let snap = s.stats().remote.unwrap();
    assert!(snap.breaker_open, "{snap:?}");
    assert!(snap.skipped_calls > 0 && snap.read_errors > 0, "{snap:?}");

    // Redis comes up: after the cool-down one probe closes the breaker and writes go through.
    let redis = Redis::start_on(port);
    std::thread::sleep(Duration::from_millis(350));
    let id = ChunkId::new([200; 32]);
    let mut wrote = false;
    for _ in 0..20 {
        if s.put(id, chunk(200), false).await.unwrap().remote {
            wrote = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(wrote, "{:?}", s.stats().remote);
    assert!(!s.stats().remote.unwrap().breaker_open);
    assert_eq!(redis.keys().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_leaves_lookups_to_local_compute() {
    let mut redis = Redis::start();
    let s = store(remote(&redis.url()), None).await;
    let id = ChunkId::new([5; 32]);
    s.put(id, chunk(5), false).await.unwrap();
    redis.kill();
    let other = ChunkId::new([6; 32]);
    let t0 = Instant::now();
    let d = chunk(6);
    let (got, src) = s
        .get_or_compute(other, move || Ok::<_, Never>(d))
        .await
        .unwrap();
    assert_eq!(src, Source::Computed);
    assert!(bit_equal(&got, &chunk(6)));
    // Still served from memory.
    assert_eq!(
        s.get(&id).await.unwrap().map(|(_, t)| t),
        Some(Tier::Memory)
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    s.flush().await;
    let snap = s.stats().remote.unwrap();
    assert!(
        snap.read_errors + snap.write_errors + snap.skipped_calls > 0,
        "{snap:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_value_cap_apply() {
    let redis = Redis::start();
    let cfg = RemoteConfig {
        ttl_secs: 60,
        ..remote(&redis.url())
    };
    let s = store(cfg.clone(), None).await;
    s.put(ChunkId::new([1; 32]), chunk(1), false).await.unwrap();
    let mut con = redis.con().unwrap();
    for k in redis.keys() {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query(&mut con).unwrap();
        assert!((1..=60).contains(&ttl), "{k}: ttl {ttl}");
    }
    // A layer of this chunk is 2 (K, V) * 2 heads * 8 tokens * 4 dims * 4 bytes = 512 bytes:
    // a 1000-byte cap takes it; a chunk of 16 tokens (1024-byte layers) stays local.
    let capped = store(
        RemoteConfig {
            max_value_bytes: 1000,
            ..cfg
        },
        None,
    )
    .await;
    let small = capped
        .put(ChunkId::new([2; 32]), chunk(2), false)
        .await
        .unwrap();
    assert!(small.remote, "{small:?}");
    let mut big = chunk(3);
    big.meta.n_tokens = 16;
    big.meta.token_ids = (0..16).collect();
    for l in &mut big.layers {
        let twice = |x: &KvVec| [x.to_f32_vec(), x.to_f32_vec()].concat().into();
        *l = Arc::new(LayerKv {
            k: twice(&l.k),
            v: twice(&l.v),
        });
    }
    let put = capped.put(ChunkId::new([3; 32]), big, false).await.unwrap();
    assert!(put.memory && !put.remote, "{put:?}");
    assert_eq!(capped.stats().remote.unwrap().rejected_writes, 1);
}
