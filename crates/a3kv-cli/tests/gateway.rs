//! The gateway in front of a fleet, with real processes on 127.0.0.1: `scripts/fleet.sh` starts
//! two replicas of this build's `a3kv` (the default model), Redis when the build has the shared
//! tier, and HAProxy with the generated config; the test then checks chunk-aware routing
//! (per-replica `a3kv:request_success_total`), least-connections balancing without the routing
//! header, that a replica sent SIGTERM finishes its stream, is taken out by the health checks
//! and every later request is answered by the other, and that stopping the fleet leaves no
//! process behind. Also: the checked-in `configs/gateway/haproxy.cfg` is the generator's output
//! and HAProxy accepts it. Skipped, with a note, only when HAProxy (or, for the fleet,
//! redis-server) is not installed (CI installs both: scripts/setup.sh). The fleet harness is in
//! `tests/common/fleet.rs`; the fleet under faults and load is `tests/fleet_load.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fleet::{
    alive, gateway_states, haproxy, redis_present, signal, small_config, start_fleet, ROUTE,
};
use common::{a3kv, metric, model_present, request, ROOT};

#[test]
fn checked_in_haproxy_config_is_the_generators_output_and_valid() {
    let Some(haproxy) = haproxy() else { return };
    let out = Command::new("bash")
        .args([
            "scripts/gateway-config.sh",
            "127.0.0.1:8080",
            "127.0.0.1:8001",
            "127.0.0.1:8002",
        ])
        .current_dir(ROOT)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let checked_in = std::fs::read_to_string(Path::new(ROOT).join("configs/gateway/haproxy.cfg"))
        .expect("configs/gateway/haproxy.cfg");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        checked_in,
        "regenerate configs/gateway/haproxy.cfg with scripts/gateway-config.sh 127.0.0.1:8080 \
         127.0.0.1:8001 127.0.0.1:8002"
    );
    for needed in [
        "balance hdr(x-a3kv-route)",
        "hash-type consistent",
        "balance leastconn",
        "option httpchk GET /ready",
        "http-check expect status 200",
        "bind 127.0.0.1:8080",
    ] {
        assert!(checked_in.contains(needed), "config lacks {needed:?}");
    }
    let check = Command::new(haproxy)
        .args(["-c", "-f", "configs/gateway/haproxy.cfg"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(check.status.success(), "haproxy -c: {check:?}");
    // Bad input is refused, not turned into a broken config.
    let bad = Command::new("bash")
        .args(["scripts/gateway-config.sh", "127.0.0.1:8080", "no-port"])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// A small RAG chat completion (one short document, greedy, 2 tokens).
fn chat_body(stream: bool, max_tokens: u32) -> String {
    serde_json::json!({
        "messages": [{"role": "user", "content": "Where is the tower?"}],
        "documents": [{"text": "The Eiffel Tower is a wrought-iron tower in Paris, completed in 1889."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
    .to_string()
}

/// POSTs a chat through the gateway (with the routing header when `key` is set); returns the
/// status and the replica that answered (`x-a3kv-replica`: r1, r2).
fn chat(gateway: &str, key: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = key.map(|k| (ROUTE, k)).into_iter().collect();
    let body = chat_body(false, 2);
    let r = request(
        gateway,
        "POST",
        "/v1/chat/completions",
        &headers,
        Some(&body),
    );
    let replica = r.header("x-a3kv-replica").unwrap_or("").to_string();
    (r.status, replica)
}

/// `a3kv:request_success_total` of each replica, scraped directly.
fn successes(replicas: &[String]) -> Vec<f64> {
    replicas
        .iter()
        .map(|a| {
            let r = request(a, "GET", "/metrics", &[], None);
            assert_eq!(r.status, 200, "{a}/metrics");
            metric(&r.body, "a3kv:request_success_total", "")
        })
        .collect()
}

fn delta(after: &[f64], before: &[f64]) -> Vec<u64> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| (a - b).round() as u64)
        .collect()
}

#[test]
fn fleet_routes_by_key_balances_without_it_survives_a_drain_and_stops_cleanly() {
    if !model_present() || haproxy().is_none() {
        return;
    }
    let remote = true;
    if !redis_present() {
        return;
    }
    let t_start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path());
    let fleet = start_fleet(dir.path(), &config, 2, remote, "500ms");
    let t_up = t_start.elapsed();
    let gateway = fleet.gateway();
    let replicas = fleet.replicas();
    assert_eq!(replicas.len(), 2, "{:?}", fleet.env);
    assert_eq!(
        gateway_states(&gateway).values().collect::<Vec<_>>(),
        ["UP", "UP"],
        "fleet.env is written once every replica is up in the gateway"
    );
    assert_eq!(
        request(&gateway, "GET", "/gateway/health", &[], None).status,
        200
    );

    // (a) One routing key: every request on one replica. Sent by the real load generator
    // (one document in the pool, so one first document, one key).
    let before = successes(&replicas);
    let out = a3kv()
        .args(["loadgen", "--target", &format!("http://{gateway}")])
        .args([
            "--route-header",
            ROUTE,
            "--num-docs",
            "1",
            "--doc-words",
            "40",
        ])
        .args(["--docs-per-request", "1", "--output-tokens", "2"])
        .args([
            "--arrival",
            "closed",
            "--concurrency",
            "1",
            "--num-requests",
            "4",
        ])
        .args(["--no-progress", "--request-timeout-secs", "60"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = delta(&successes(&replicas), &before);
    assert_eq!(
        d.iter().sum::<u64>(),
        4,
        "every loadgen request succeeded: {d:?}"
    );
    assert!(
        d.contains(&4) && d.contains(&0),
        "one routing key, one replica: successes per replica {d:?}"
    );

    // Different keys spread: 8 keys over 2 replicas, each key sticking to its replica.
    let before = successes(&replicas);
    let mut home: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..2 {
        for k in 0..8 {
            let key = format!("doc-{k:016x}");
            let (status, replica) = chat(&gateway, Some(&key));
            assert_eq!(status, 200, "key {key}");
            let first = home.entry(key.clone()).or_insert_with(|| replica.clone());
            assert_eq!(*first, replica, "key {key} moved in round {round}");
        }
    }
    let d = delta(&successes(&replicas), &before);
    let used: BTreeSet<&String> = home.values().collect();
    assert_eq!(used.len(), 2, "8 keys spread over both replicas: {home:?}");
    assert_eq!(d.iter().sum::<u64>(), 16, "{d:?}");
    assert!(
        d.iter().all(|&n| n >= 2),
        "both replicas served keys: {d:?}"
    );
    // Both replicas answered the same document: the one that came second read the prompt
    // prefix's and the document's chunks from the shared Redis tier instead of computing them.
    let remote_hits: f64 = replicas
        .iter()
        .map(|r| {
            let m = request(r, "GET", "/metrics", &[], None).body;
            metric(
                &m,
                "a3kv:chunk_lookups_total",
                "tier=\"remote\",result=\"hit\"",
            )
        })
        .sum();
    assert!(
        remote_hits >= 2.0,
        "remote hits over the fleet: {remote_hits}"
    );

    // (b) No routing key: least connections, so both replicas serve.
    let before = successes(&replicas);
    let mut served = BTreeSet::new();
    for _ in 0..6 {
        let (status, replica) = chat(&gateway, None);
        assert_eq!(status, 200);
        served.insert(replica);
    }
    let d = delta(&successes(&replicas), &before);
    assert_eq!(
        served.len(),
        2,
        "requests without a key reach both replicas"
    );
    assert!(
        d.iter().all(|&n| n >= 1) && d.iter().sum::<u64>() == 6,
        "{d:?}"
    );

    // (c) Drain: a stream in flight on r1 through the gateway, then SIGTERM to r1. The stream
    // finishes, the health checks take r1 out, and every later request is answered by r2.
    let r1_key = home
        .iter()
        .find(|(_, r)| r.as_str() == "r1")
        .map(|(k, _)| k.clone())
        .expect("a key lives on r1");
    let r2_key = home
        .iter()
        .find(|(_, r)| r.as_str() == "r2")
        .map(|(k, _)| k.clone())
        .expect("a key lives on r2");
    let pids = fleet.replica_pids();
    let stream = {
        let (gw, key) = (gateway.clone(), r1_key.clone());
        std::thread::spawn(move || {
            let body = chat_body(true, 24);
            request(
                &gw,
                "POST",
                "/v1/chat/completions",
                &[(ROUTE, &key)],
                Some(&body),
            )
        })
    };
    // Let the stream reach r1 before the signal.
    let t0 = Instant::now();
    while request(&replicas[0], "GET", "/metrics", &[], None)
        .body
        .lines()
        .all(|l| l != "a3kv:num_requests_running 1")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "stream never ran on r1"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t_term = Instant::now();
    signal(pids[0], "TERM");
    // Before the health checks notice, a request for r1 finds its listener closed and is
    // retried on r2 (retry-on conn-failure, option redispatch); after, it is routed to r2.
    std::thread::sleep(Duration::from_millis(200));
    let (status, replica) = chat(&gateway, Some(&r1_key));
    assert_eq!(
        (status, replica.as_str()),
        (200, "r2"),
        "right after SIGTERM"
    );
    while gateway_states(&gateway).get("r1").map(String::as_str) != Some("DOWN") {
        assert!(
            t_term.elapsed() < Duration::from_secs(15),
            "the gateway did not take r1 out: {:?}",
            gateway_states(&gateway)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let t_out = t_term.elapsed();
    let streamed = stream.join().expect("stream thread");
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.header("x-a3kv-replica"), Some("r1"));
    assert!(
        streamed.body.contains("data: [DONE]"),
        "the draining replica finished its stream: {}",
        streamed.body
    );
    for key in [Some(r1_key.as_str()), Some(r2_key.as_str()), None, None] {
        let (status, replica) = chat(&gateway, key);
        assert_eq!((status, replica.as_str()), (200, "r2"), "key {key:?}");
    }

    // (d) Stopping the fleet drains and stops everything: no process left, port closed.
    let mut fleet = fleet;
    let script_pid = fleet.script.id();
    signal(script_pid, "TERM");
    let t_stop = Instant::now();
    let status = loop {
        if let Some(s) = fleet.script.try_wait().unwrap() {
            break s;
        }
        assert!(
            t_stop.elapsed() < Duration::from_secs(40),
            "fleet.sh still running 40 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(dir.path().join("fleet.out")).unwrap_or_default();
    assert!(status.success(), "fleet.sh exit {status}: {out}");
    let left: Vec<u32> = fleet.pids().into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}\n{out}");
    assert!(
        std::net::TcpStream::connect(&gateway).is_err(),
        "gateway port still open"
    );
    assert!(!fleet.dir.join("fleet.pid").exists());
    assert!(
        fleet
            .log("gateway.log")
            .contains("replicas_routed/r1 is DOWN"),
        "{}",
        fleet.log("gateway.log")
    );
    println!(
        "gateway test: remote tier {remote}, fleet up in {:.1} s, r1 out of the gateway {:.1} s \
         after SIGTERM, fleet stopped in {:.1} s, total {:.1} s",
        t_up.as_secs_f64(),
        t_out.as_secs_f64(),
        t_stop.elapsed().as_secs_f64(),
        t_start.elapsed().as_secs_f64()
    );
}
