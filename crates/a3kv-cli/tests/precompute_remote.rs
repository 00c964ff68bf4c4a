//! `a3kv precompute` into a Redis tier alone (no disk tier configured), against a real
//! `redis-server` on 127.0.0.1: the first run computes and stores every chunk (a header and one
//! value per layer each), a second run reads each back, verifies it and computes nothing, and a
//! value damaged in Redis is found, recomputed and rewritten.

mod common;

#[path = "../../a3kv-store/tests/support/redis.rs"]
mod redis_support;

use common::{a3kv, model_present};

#[test]
fn precompute_fills_a_redis_tier_alone_and_resumes() {
    if !model_present() {
        return;
    }
    let redis = redis_support::Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs.jsonl");
    std::fs::write(
        &docs,
        "{\"id\": \"a\", \"text\": \"The Zorblat festival is held every spring in the town of Quenby.\"}\n\
         {\"id\": \"b\", \"text\": \"Quenby lies on the river Marl, two hours north of the capital.\"}\n",
    )
    .unwrap();
    let precompute = || {
        let out = a3kv()
            .args(["precompute", "--no-progress", "--docs"])
            .arg(&docs)
            .arg("--set")
            .arg(format!("engine.store.remote.url={}", redis.url()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let first = precompute();
    assert!(
        first.contains("2 chunks: 2 computed") && first.contains("0 already stored"),
        "{first}"
    );
    let headers: Vec<String> = redis
        .keys()
        .into_iter()
        .filter(|k| k.ends_with(":h"))
        .collect();
    assert_eq!(headers.len(), 2, "{:?}", redis.keys());
    let again = precompute();
    assert!(
        again.contains("0 computed") && again.contains("2 already stored"),
        "{again}"
    );

    // Damage one layer value: found on the verifying read, recomputed, rewritten.
    let mut con = redis.con().unwrap();
    let layer = headers[0].replace(":h", ":l3");
    let mut v: Vec<u8> = redis::cmd("GET").arg(&layer).query(&mut con).unwrap();
    v[11] ^= 0x20;
    redis::cmd("SET")
        .arg(&layer)
        .arg(v)
        .query::<()>(&mut con)
        .unwrap();
    let repaired = precompute();
    assert!(
        repaired.contains("1 computed")
            && repaired.contains("1 already stored")
            && repaired.contains("1 stored chunk(s) failed verification"),
        "{repaired}"
    );
    let after = precompute();
    assert!(after.contains("2 already stored"), "{after}");
}
