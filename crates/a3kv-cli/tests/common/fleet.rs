//! A fleet of real processes for the gateway tests: `scripts/fleet.sh up` (replicas of this
//! build's `a3kv`, Redis when asked, HAProxy) run from a test, its `fleet.env` read back, and
//! everything it started stopped when the [`Fleet`] is dropped. Also: finding HAProxy and
//! redis-server (skip with a note outside CI), the gateway's per-replica states, and summing a
//! metric over the replicas.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{metric, request, ROOT};

/// The routing header the fleet's gateway hashes on.
pub const ROUTE: &str = "x-a3kv-route";

/// HAProxy's path (Debian puts it in /usr/sbin), or `None` (skip) when it is not installed.
pub fn haproxy() -> Option<PathBuf> {
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

/// Whether redis-server is installed; outside CI its absence skips the test with a note.
pub fn redis_present() -> bool {
    if Path::new("/usr/bin/redis-server").exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install redis-server"
    );
    eprintln!("SKIP: redis-server is not installed (apt-get install redis-server)");
    false
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends signal `sig` (e.g. `TERM`, `KILL`) to `pid`.
pub fn signal(pid: u32, sig: &str) {
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
pub struct Fleet {
    /// `scripts/fleet.sh up`.
    pub script: Child,
    /// Its `fleet.env`.
    pub env: BTreeMap<String, String>,
    /// Its `FLEET_DIR` (logs, fleet.env).
    pub dir: PathBuf,
}

impl Fleet {
    /// Every pid the script started (gateway, replicas, Redis).
    pub fn pids(&self) -> Vec<u32> {
        ["GATEWAY_PID", "REPLICA_PIDS", "REDIS_PID"]
            .iter()
            .filter_map(|k| self.env.get(*k))
            .flat_map(|v| v.split_whitespace())
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The replicas' pids, r1 first.
    pub fn replica_pids(&self) -> Vec<u32> {
        self.env["REPLICA_PIDS"]
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The gateway's `host:port`.
    pub fn gateway(&self) -> String {
        self.env["GATEWAY_URL"].trim_start_matches("http://").into()
    }

    /// Each replica's `host:port`, r1 first.
    pub fn replicas(&self) -> Vec<String> {
        self.env["REPLICA_URLS"]
            .split_whitespace()
            .map(|u| u.trim_start_matches("http://").to_string())
            .collect()
    }

    /// Redis's port and pid, when the fleet runs one.
    pub fn redis(&self) -> Option<(u16, u32)> {
        let port = self
            .env
            .get("REDIS_URL")?
            .rsplit_once(':')?
            .1
            .parse()
            .ok()?;
        let pid = self.env.get("REDIS_PID")?.parse().ok()?;
        Some((port, pid))
    }

    /// A log file of the fleet (`gateway.log`, `replica-1.log`, ..), or "".
    pub fn log(&self, name: &str) -> String {
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

/// Starts `scripts/fleet.sh up` with `replicas` replicas reading `config` (with Redis when
/// `remote`; the gateway checking every `check_inter`, e.g. `1s`) and waits for its
/// `fleet.env`. Its output goes to `dir/fleet.out`.
pub fn start_fleet(
    dir: &Path,
    config: &Path,
    replicas: usize,
    remote: bool,
    check_inter: &str,
) -> Fleet {
    let fleet_dir = dir.join("fleet");
    let out = std::fs::File::create(dir.join("fleet.out")).expect("create fleet.out");
    let script = Command::new("bash")
        .args(["scripts/fleet.sh", "up"])
        .current_dir(ROOT)
        .env("A3KV", env!("CARGO_BIN_EXE_a3kv"))
        .env("REPLICAS", replicas.to_string())
        .env("GATEWAY_PORT", free_port().to_string())
        .env("CONFIG", config)
        .env("FLEET_DIR", &fleet_dir)
        .env("FLEET_REMOTE", if remote { "1" } else { "0" })
        .env("CHECK_INTER", check_inter)
        .env("STOP_TIMEOUT", "30")
        .stdout(out.try_clone().expect("fleet.out"))
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start scripts/fleet.sh");
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

/// Writes a small server config for the replicas into `dir/serve.toml`: short prompts, a
/// 256 MiB memory tier, 4 output tokens by default, a 10-s drain.
pub fn small_config(dir: &Path) -> PathBuf {
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        "[engine]\nmax_prompt_tokens = 1024\nmax_new_tokens = 64\nmax_documents = 4\n\
         [engine.store]\nmemory_budget_bytes = 268435456\n\
         [limits]\ndefault_max_tokens = 4\n[shutdown]\ndrain_secs = 10\n",
    )
    .expect("write serve.toml");
    config
}

/// A small greedy RAG chat completion citing `doc` (inline text), `max_tokens` long.
pub fn chat_body_with(doc: &str, stream: bool, max_tokens: u32) -> String {
    serde_json::json!({
        "messages": [{"role": "user", "content": "What is this about?"}],
        "documents": [{"text": doc}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
    .to_string()
}

/// Replica states in the routed backend from the gateway's stats CSV: `{r1: "UP", ..}`.
pub fn gateway_states(gateway: &str) -> BTreeMap<String, String> {
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

/// Each replica's `/metrics` text (scraped directly, not through the gateway).
pub fn scrape(replicas: &[String]) -> Vec<String> {
    replicas
        .iter()
        .map(|a| {
            let r = request(a, "GET", "/metrics", &[], None);
            assert_eq!(r.status, 200, "{a}/metrics");
            r.body
        })
        .collect()
}

/// A sample family summed over every replica's scrape (label sets containing `labels`).
pub fn fleet_sum(scrapes: &[String], name: &str, labels: &str) -> f64 {
    scrapes.iter().map(|m| metric(m, name, labels)).sum()
}
