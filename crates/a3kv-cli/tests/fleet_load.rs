//! The fleet under load, with real processes on 127.0.0.1 (`scripts/fleet.sh`: replicas of this
//! build's `a3kv` with the default model, Redis, HAProxy), each test bounded to well under a
//! minute on two cores:
//!
//! - a replica killed with SIGKILL while clients stream through the gateway: the gateway's
//!   health checks (`inter 1s`, `fall 2`) take it out within about two seconds; the requests
//!   in flight on it are counted (a stream already answering is cut; one that had no answer
//!   yet is retried on the other replica), and every request sent after it is marked down
//!   succeeds;
//! - Redis killed mid-load, then restarted on the same port: no request fails, the replicas
//!   count remote-tier errors while it is down, and once the circuit breaker's cool-down has
//!   passed a document computed by one replica is read from Redis by the other again;
//! - chunk-aware routing on vs off over the same kind of trace (`a3kv loadgen`, with and
//!   without `--route-header`): routing gives the higher memory-tier hit rate and fewer chunk
//!   computations per request. This one runs without the shared tier, so that what a replica
//!   did not compute itself it must compute (with Redis it would read it instead; that case is
//!   measured by `scripts/bench-fleet.sh`).
//!
//! Each prints what it measured. Skipped, with a note, only when HAProxy or redis-server is not
//! installed (CI installs both: scripts/setup.sh), or the model is absent.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::fleet::{
    alive, chat_body_with, fleet_sum, gateway_states, haproxy, redis_present, scrape, signal,
    small_config, start_fleet, Fleet, ROUTE,
};
use common::{a3kv, model_present, request, try_request};

/// Whether the fleet tests can run here (skips with a note otherwise).
fn can_run() -> bool {
    model_present() && haproxy().is_some() && redis_present()
}

/// One request of a load loop: when it was sent and when it ended (since the test's start),
/// and the replica that answered (`x-a3kv-replica`) or why it failed.
#[derive(Debug, Clone)]
struct Sent {
    start: Duration,
    end: Duration,
    outcome: Result<String, String>,
}

/// A streamed chat through the gateway; a success is a 200 whose stream ends with `[DONE]`
/// and carries no error event.
fn stream_chat(gateway: &str, body: &str, key: Option<&str>) -> Result<String, String> {
    let headers: Vec<(&str, &str)> = key.map(|k| (ROUTE, k)).into_iter().collect();
    let r = try_request(
        gateway,
        "POST",
        "/v1/chat/completions",
        &headers,
        Some(body),
    )
    .map_err(|e| format!("io: {:?}", e.kind()))?;
    let replica = r.header("x-a3kv-replica").unwrap_or("?").to_string();
    if r.status != 200 {
        return Err(format!("status {} from {replica}", r.status));
    }
    if r.body.contains("data: {\"error\"") {
        return Err(format!("error event from {replica}"));
    }
    if !r.body.contains("data: [DONE]") {
        return Err(format!("stream cut (from {replica})"));
    }
    Ok(replica)
}

/// `clients` threads sending streamed chats through the gateway back to back until `stop`;
/// request `n` (counted over all clients) has the body `body(n)`.
fn load(
    gateway: &str,
    clients: usize,
    t0: Instant,
    stop: &Arc<AtomicBool>,
    body: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Vec<JoinHandle<Vec<Sent>>> {
    let body = Arc::new(body);
    let counter = Arc::new(AtomicUsize::new(0));
    (0..clients)
        .map(|_| {
            let (gw, stop, body, counter) = (
                gateway.to_string(),
                stop.clone(),
                body.clone(),
                counter.clone(),
            );
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let b = body(counter.fetch_add(1, Ordering::SeqCst));
                    let start = t0.elapsed();
                    let outcome = stream_chat(&gw, &b, None);
                    sent.push(Sent {
                        start,
                        end: t0.elapsed(),
                        outcome,
                    });
                }
                sent
            })
        })
        .collect()
}

/// Stops the load threads and returns every request, in order of sending.
fn finish(stop: &Arc<AtomicBool>, threads: Vec<JoinHandle<Vec<Sent>>>) -> Vec<Sent> {
    stop.store(true, Ordering::SeqCst);
    let mut all: Vec<Sent> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("load thread"))
        .collect();
    all.sort_by_key(|s| s.start);
    all
}

/// A short document of its own for request `n` (about 40 tokens): each one is a new chunk.
fn fresh_doc(tag: &str, n: usize) -> String {
    format!(
        "Report {tag}-{n}: the {n}th shipment of copper wire left the northern warehouse on a \
         Tuesday, was checked by inspector number {} and reached the harbour two days later.",
        n * 7 + 3
    )
}

#[test]
fn replica_killed_under_load_is_taken_out_and_later_requests_all_succeed() {
    if !can_run() {
        return;
    }
    let t_start = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(dir.path());
    // The gateway's default health checks: every 1 s, 2 failures to go down.
    let fleet = start_fleet(dir.path(), &config, 2, true, "1s");
    let (gateway, replicas) = (fleet.gateway(), fleet.replicas());
    let r1_pid = fleet.replica_pids()[0];

    // Four clients without a routing key (least connections: both replicas busy), over four
    // documents, 32 streamed tokens each, so a request spends much of its time streaming.
    let docs: Vec<String> = (0..4).map(|i| fresh_doc("kill", i)).collect();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&gateway, 4, t0, &stop, move |n| {
        chat_body_with(&docs[n % docs.len()], true, 32)
    });

    // Kill r1 once it has answered some requests and is streaming tokens (its generated-token
    // count moved since the last look): a stream the gateway cannot retry is in flight.
    let wait = Instant::now();
    let mut tokens_seen = f64::MAX;
    let running_on_r1 = loop {
        let m = &scrape(&replicas[..1])[0];
        let done = common::metric(m, "a3kv:request_success_total", "");
        let running = common::metric(m, "a3kv:num_requests_running", "");
        let tokens = common::metric(m, "a3kv:generation_tokens_total", "");
        if done >= 2.0 && running >= 1.0 && tokens > tokens_seen {
            break running;
        }
        tokens_seen = tokens;
        assert!(
            wait.elapsed() < Duration::from_secs(30),
            "r1 never got load: {done} done, {running} running"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    signal(r1_pid, "KILL");
    let t_kill = t0.elapsed();
    while gateway_states(&gateway).get("r1").map(String::as_str) != Some("DOWN") {
        assert!(
            t0.elapsed() - t_kill < Duration::from_secs(15),
            "the gateway did not take r1 out: {:?}",
            gateway_states(&gateway)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t_down = t0.elapsed();
    assert!(!alive(r1_pid), "r1 survived SIGKILL");
    // Load on the survivor for a while after the gateway took r1 out.
    std::thread::sleep(Duration::from_secs(6));
    let all = finish(&stop, threads);

    let failed: Vec<&Sent> = all.iter().filter(|s| s.outcome.is_err()).collect();
    let in_flight_at_kill = all
        .iter()
        .filter(|s| s.start < t_kill && s.end > t_kill)
        .count();
    let between: Vec<&Sent> = all
        .iter()
        .filter(|s| s.start >= t_kill && s.start < t_down)
        .collect();
    let after: Vec<&Sent> = all.iter().filter(|s| s.start >= t_down).collect();
    for s in &failed {
        assert!(
            s.start < t_kill && s.end >= t_kill,
            "only requests in flight at the kill may fail: {s:?} (kill at {t_kill:?})"
        );
    }
    assert!(after.len() >= 4, "too few requests after r1 went down");
    for s in &after {
        assert_eq!(
            s.outcome.as_deref(),
            Ok("r2"),
            "a request sent after r1 was marked down: {s:?}"
        );
    }
    let lost: Vec<String> = failed
        .iter()
        .map(|s| s.outcome.clone().unwrap_err())
        .collect();
    println!(
        "kill -9 test: r1 running {running_on_r1} requests at the kill, {in_flight_at_kill} \
         requests in flight through the gateway; lost {} ({lost:?}); r1 marked DOWN {:.2} s \
         after the kill (inter 1s, fall 2); {} requests sent between kill and DOWN ({} failed), \
         {} after DOWN, 0 failed; {} requests in all; test {:.1} s",
        failed.len(),
        (t_down - t_kill).as_secs_f64(),
        between.len(),
        between.iter().filter(|s| s.outcome.is_err()).count(),
        after.len(),
        all.len(),
        t_start.elapsed().as_secs_f64()
    );
    drop(fleet);
}

/// A redis-server this test started (again) with fleet.sh's arguments; killed on drop.
struct Redis(Child);

impl Redis {
    /// Starts redis-server on `port` as scripts/fleet.sh does and waits for its PING.
    fn start(fleet: &Fleet, port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(fleet.dir.join("redis"))
            .args(["--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru"])
            .args(["--daemonize", "no", "--logfile", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis(child);
        let t0 = Instant::now();
        while redis_call(port, "PING").as_deref() != Some("+PONG") {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis-server did not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One inline Redis command's first reply line, or `None` if Redis does not answer.
fn redis_call(port: u16, command: &str) -> Option<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim_end().to_string())
}

/// Remote-tier trouble counted over the fleet: lookups that could not ask Redis
/// (`a3kv:chunk_lookups_total{tier="remote",result="error"}`) and failed Redis calls
/// (`a3kv:remote_errors_total`).
fn remote_trouble(replicas: &[String]) -> [f64; 2] {
    let m = scrape(replicas);
    [
        fleet_sum(
            &m,
            "a3kv:chunk_lookups_total",
            "tier=\"remote\",result=\"error\"",
        ),
        fleet_sum(&m, "a3kv:remote_errors_total", ""),
    ]
}

#[test]
fn redis_killed_mid_load_fails_no_request_and_hits_resume_after_restart() {
    if !can_run() {
        return;
    }
    let t_start = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(dir.path());
    let fleet = start_fleet(dir.path(), &config, 2, true, "500ms");
    let (gateway, replicas) = (fleet.gateway(), fleet.replicas());
    let (port, redis_pid) = fleet.redis().expect("the fleet runs Redis");

    // Two clients, each request citing a document never seen before: every one misses memory
    // and consults Redis (then computes and writes it back).
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(&gateway, 2, t0, &stop, |n| {
        chat_body_with(&fresh_doc("redis", n), true, 2)
    });
    std::thread::sleep(Duration::from_secs(3));
    let trouble_before = remote_trouble(&replicas);
    signal(redis_pid, "KILL");
    let t_kill = t0.elapsed();
    let t_wait = Instant::now();
    while alive(redis_pid) {
        assert!(t_wait.elapsed() < Duration::from_secs(5), "Redis survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(5));
    let trouble_now = remote_trouble(&replicas);
    let (lookup_errors, call_errors) = (
        trouble_now[0] - trouble_before[0],
        trouble_now[1] - trouble_before[1],
    );

    // Restart it on the same port, with the same arguments (empty: no persistence).
    let redis = Redis::start(&fleet, port);
    let t_restart = t0.elapsed();
    // The breaker's cool-down (breaker_cooldown_ms, 2 s by default), then one probe closes it.
    std::thread::sleep(Duration::from_millis(2500));

    // Hits resume: a new document computed by r1 is read from Redis by r2. Retried with a
    // fresh document for a few seconds, in case a replica's breaker was still open.
    let hit = |m: &String| {
        common::metric(
            m,
            "a3kv:chunk_lookups_total",
            "tier=\"remote\",result=\"hit\"",
        )
    };
    let t_probe = Instant::now();
    let mut attempt = 0;
    let resumed_after = loop {
        attempt += 1;
        let body = chat_body_with(&fresh_doc("resume", attempt), false, 2);
        let before = hit(&scrape(&replicas[1..])[0]);
        let a = request(
            &replicas[0],
            "POST",
            "/v1/chat/completions",
            &[],
            Some(&body),
        );
        assert_eq!(a.status, 200, "r1: {}", a.body);
        let b = request(
            &replicas[1],
            "POST",
            "/v1/chat/completions",
            &[],
            Some(&body),
        );
        assert_eq!(b.status, 200, "r2: {}", b.body);
        if hit(&scrape(&replicas[1..])[0]) > before {
            break t0.elapsed() - t_restart;
        }
        assert!(
            t_probe.elapsed() < Duration::from_secs(15),
            "no remote hit on r2 {attempt} documents after the restart (keys in Redis: {:?})",
            redis_call(port, "DBSIZE")
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let all = finish(&stop, threads);
    let during: Vec<&Sent> = all
        .iter()
        .filter(|s| s.end > t_kill && s.start < t_restart)
        .collect();
    let failed: Vec<&Sent> = all.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    assert!(
        during.len() >= 2,
        "too few requests while Redis was down: {}",
        during.len()
    );
    assert!(
        lookup_errors >= 1.0 && call_errors >= 1.0,
        "remote-tier errors while Redis was down: {lookup_errors} lookups, {call_errors} calls"
    );
    println!(
        "redis kill test: {} requests through the gateway, 0 failed ({} while Redis was down); \
         remote lookups with result=\"error\" while down +{lookup_errors}, \
         a3kv:remote_errors_total +{call_errors}; remote hit on r2 for a document r1 computed \
         {:.1} s after the restart (document {attempt}); keys in Redis {:?}; test {:.1} s",
        all.len(),
        during.len(),
        resumed_after.as_secs_f64(),
        redis_call(port, "DBSIZE"),
        t_start.elapsed().as_secs_f64()
    );
    drop(redis);
    drop(fleet);
}

/// What one loadgen run through the gateway cost the fleet.
#[derive(Debug)]
struct RunCost {
    requests: f64,
    failed: u64,
    memory_hit_rate: f64,
    computations: f64,
}

/// `a3kv loadgen` through the gateway (with the routing header when `routed`): 24 requests,
/// one document each from a pool of 6 (uniform), two in flight, 2 output tokens.
fn loadgen_run(fleet: &Fleet, routed: bool, seed: u64, out: &std::path::Path) -> RunCost {
    let replicas = fleet.replicas();
    let before = scrape(&replicas);
    let mut cmd = a3kv();
    cmd.args([
        "loadgen",
        "--target",
        &format!("http://{}", fleet.gateway()),
    ])
    .args(["--num-docs", "6", "--doc-words", "60", "--zipf", "0"])
    .args(["--docs-per-request", "1", "--output-tokens", "2"])
    .args(["--arrival", "closed", "--concurrency", "2"])
    .args(["--num-requests", "24", "--seed", &seed.to_string()])
    .args(["--no-progress", "--request-timeout-secs", "120", "--out"])
    .arg(out);
    if routed {
        cmd.args(["--route-header", ROUTE]);
    }
    let o = cmd.output().expect("run a3kv loadgen");
    assert!(
        o.status.success(),
        "loadgen: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out).expect("loadgen report")).expect("JSON");
    let summary = &report["runs"][0]["summary"];
    let after = scrape(&replicas);
    let d = |name: &str, labels: &str| {
        fleet_sum(&after, name, labels) - fleet_sum(&before, name, labels)
    };
    let hits = d("a3kv:chunk_lookups_total", "tier=\"memory\",result=\"hit\"");
    let lookups = d("a3kv:chunk_lookups_total", "tier=\"memory\"");
    RunCost {
        requests: summary["sent"].as_f64().unwrap_or(0.0),
        failed: summary["failed"].as_u64().unwrap_or(u64::MAX),
        memory_hit_rate: hits / lookups.max(1.0),
        computations: d("a3kv:chunk_load_seconds_count", "tier=\"computed\""),
    }
}

#[test]
fn routing_raises_the_memory_hit_rate_and_cuts_chunk_computations() {
    if !can_run() {
        return;
    }
    let t_start = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config(dir.path());
    let fleet = start_fleet(dir.path(), &config, 2, false, "500ms");
    let replicas = fleet.replicas();
    // The prompt prefix (one chunk every request shares) warm on both replicas first, so the
    // two runs start alike: only their documents are new.
    for r in &replicas {
        let body = chat_body_with(&fresh_doc("warm", 0), false, 2);
        assert_eq!(
            request(r, "POST", "/v1/chat/completions", &[], Some(&body)).status,
            200
        );
    }
    // Two seeds: two pools of fresh documents, the same shape of trace.
    let off = loadgen_run(&fleet, false, 1, &dir.path().join("off.json"));
    let on = loadgen_run(&fleet, true, 2, &dir.path().join("on.json"));
    assert_eq!((off.failed, on.failed), (0, 0), "off {off:?}, on {on:?}");
    let per_request = |c: &RunCost| c.computations / c.requests.max(1.0);
    println!(
        "routing test: routing off: memory hit rate {:.0}%, {} chunk computations for {} \
         requests ({:.2} per request); routing on: memory hit rate {:.0}%, {} computations \
         ({:.2} per request); test {:.1} s",
        100.0 * off.memory_hit_rate,
        off.computations,
        off.requests,
        per_request(&off),
        100.0 * on.memory_hit_rate,
        on.computations,
        per_request(&on),
        t_start.elapsed().as_secs_f64()
    );
    assert!(
        on.memory_hit_rate > off.memory_hit_rate,
        "routing on {on:?} vs off {off:?}"
    );
    assert!(
        per_request(&on) < per_request(&off),
        "routing on {on:?} vs off {off:?}"
    );
}
