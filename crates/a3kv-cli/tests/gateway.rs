//! The gateway in front of a fleet, with real processes on 127.0.0.1: `scripts/fleet.sh` starts
//! two replicas of this build's `a3kv` (the default model), Redis when the build has the shared
//! tier, and HAProxy with the generated config; the test then checks chunk-aware routing
//! (per-replica `a3kv:request_success_total`), least-connections balancing without the routing
//! header, that a replica sent SIGTERM finishes its stream, is taken out by the health checks
//! and every later request is answered by the other, and that stopping the fleet leaves no
//! process behind. Also: the checked-in `configs/gateway/haproxy.cfg` is the generator's output
//! and HAProxy accepts it. Skipped, with a note, only when HAProxy is not installed (CI installs
//! it: scripts/setup.sh).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{a3kv, metric, model_present, request, ROOT};

const ROUTE: &str = "x-a3kv-route";

/// HAProxy's path (Debian puts it in /usr/sbin), or `None` (skip) when it is not installed.
fn haproxy() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install haproxy (scripts/setup.sh)"
        );
        eprintln!("SKIP: haproxy is not installed (apt-get install haproxy; scripts/setup.sh)");
    }
    found
}

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

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// `KEY=VALUE` lines of `fleet.env` (quotes removed).
fn read_env(path: &Path) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let map: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect();
    map.contains_key("ROUTE_HEADER").then_some(map)
}

/// The fleet script and every process it started; stops them whatever way the test ends.
struct Fleet {
    script: Child,
    env: BTreeMap<String, String>,
    dir: PathBuf,
}

impl Fleet {
    fn pids(&self) -> Vec<u32> {
        ["GATEWAY_PID", "REPLICA_PIDS", "REDIS_PID"]
            .iter()
            .filter_map(|k| self.env.get(*k))
            .flat_map(|v| v.split_whitespace())
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    fn gateway(&self) -> String {
        self.env["GATEWAY_URL"].trim_start_matches("http://").into()
    }

    fn replicas(&self) -> Vec<String> {
        self.env["REPLICA_URLS"]
            .split_whitespace()
            .map(|u| u.trim_start_matches("http://").to_string())
            .collect()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if self.script.try_wait().ok().flatten().is_none() {
            signal(self.script.id(), "TERM");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if self.script.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = self.script.kill();
            let _ = self.script.wait();
        }
        for pid in self.pids() {
            if alive(pid) {
                signal(pid, "KILL");
            }
        }
    }
}

/// Starts `scripts/fleet.sh up` and waits for its `fleet.env`.
fn start_fleet(dir: &Path, config: &Path, remote: bool) -> Fleet {
    let fleet_dir = dir.join("fleet");
    let out = std::fs::File::create(dir.join("fleet.out")).unwrap();
    let script = Command::new("bash")
        .args(["scripts/fleet.sh", "up"])
        .current_dir(ROOT)
        .env("A3KV", env!("CARGO_BIN_EXE_a3kv"))
        .env("REPLICAS", "2")
        .env("GATEWAY_PORT", free_port().to_string())
        .env("CONFIG", config)
        .env("FLEET_DIR", &fleet_dir)
        .env("FLEET_REMOTE", if remote { "1" } else { "0" })
        .env("CHECK_INTER", "500ms")
        .env("STOP_TIMEOUT", "30")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut fleet = Fleet {
        script,
        env: BTreeMap::new(),
        dir: fleet_dir.clone(),
    };
    let t0 = Instant::now();
    loop {
        if let Some(env) = read_env(&fleet_dir.join("fleet.env")) {
            fleet.env = env;
            return fleet;
        }
        if let Ok(Some(status)) = fleet.script.try_wait() {
            let out = std::fs::read_to_string(dir.join("fleet.out")).unwrap_or_default();
            panic!("fleet.sh exited at start ({status}):\n{out}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "fleet not up in 180 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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

/// Replica states in the routed backend from the gateway's stats CSV: `{r1: "UP", ..}`.
fn gateway_states(gateway: &str) -> BTreeMap<String, String> {
    let r = request(gateway, "GET", "/gateway/stats;csv", &[], None);
    let mut lines = r.body.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
        return BTreeMap::new();
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(px) == Some(&"replicas_routed"))
        .filter(|f| f.get(sv).is_some_and(|s| s.starts_with('r')))
        .map(|f| (f[sv].to_string(), f.get(st).unwrap_or(&"").to_string()))
        .collect()
}

#[test]
fn fleet_routes_by_key_balances_without_it_survives_a_drain_and_stops_cleanly() {
    if !model_present() || haproxy().is_none() {
        return;
    }
    let remote = true;
    if !Path::new("/usr/bin/redis-server").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install redis-server"
        );
        eprintln!("SKIP: redis-server is not installed (apt-get install redis-server)");
        return;
    }
    let t_start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "[engine]\nmax_prompt_tokens = 1024\nmax_new_tokens = 64\nmax_documents = 4\n\
         [engine.store]\nmemory_budget_bytes = 268435456\n\
         [limits]\ndefault_max_tokens = 4\n[shutdown]\ndrain_secs = 10\n",
    )
    .unwrap();
    let fleet = start_fleet(dir.path(), &config, remote);
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
    let pids: Vec<u32> = fleet.env["REPLICA_PIDS"]
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
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
