//! `/metrics` against the real tools: `promtool check metrics`, a real Prometheus server
//! scraping the live server and answering `histogram_quantile` over the TTFT histogram, and
//! every PromQL expression of `dashboards/a3kv.json` syntax-checked by promtool and naming
//! only series the live server exports.
//! Needs the Debian package `prometheus` (`promtool` and `prometheus` on PATH).

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::common::{base, client, lock, rag_chat, scrape, shared};

/// Kills the Prometheus child on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Drives traffic that touches every metric family: RAG and plain generations, a stored
/// chunk, a rejected request and a client disconnect.
async fn drive_traffic(addr: std::net::SocketAddr) {
    let c = client();
    let url = base(addr);
    for stream in [false, true] {
        let r = c
            .post(format!("{url}/v1/chat/completions"))
            .json(&rag_chat("Where is Mount Fuji?", 3, stream))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.expect("body");
    }
    let r = c
        .post(format!("{url}/v1/completions"))
        .json(&json!({"prompt": "Hello", "max_tokens": 2}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let r = c.put(format!("{url}/v1/chunks")).json(&json!({"documents": [{"id": "metrics-doc", "text": "Metrics are numbers over time."}]})).send().await.expect("send");
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let body = json!({"prompt": "Count from 1 to 1000: 1, 2, 3,", "max_tokens": 256, "temperature": 0, "stream": true});
    let r = c
        .post(format!("{url}/v1/completions"))
        .json(&body)
        .send()
        .await
        .expect("send");
    let mut s = r.bytes_stream();
    let _ = s.next().await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn run_tool(cmd: &mut Command, what: &str) -> std::process::Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{what}: {e} (install with `apt-get install -y prometheus`)"))
}

/// Sample names (with `_bucket`/`_sum`/`_count`) in an exposition text.
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next().map(String::from))
        .collect()
}

/// Every PromQL expression of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboards/a3kv.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard exists"))
        .expect("dashboard is JSON");
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

/// The `a3kv:` metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("a3kv:") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_prometheus_scrapes_and_dashboard_matches() {
    let Some(s) = shared() else { return };
    let _g = lock().await;
    drive_traffic(s.addr).await;
    let text = scrape(s.addr).await;
    let dir = tempfile::tempdir().expect("tempdir");

    // 1. promtool check metrics (reads stdin).
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install -y prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 1 is a parse failure; exit 3 lists lint problems. docs/design.md §7 mirrors vLLM's
    // `prefix:` names, which promlint flags ("should not contain ':'"); every other lint
    // (HELP, TYPE, suffixes, units, counters) must pass.
    let only_colon_lint = out.status.code() == Some(3)
        && report
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| l.ends_with("metric names should not contain ':'"));
    assert!(
        out.status.success() || only_colon_lint,
        "promtool check metrics ({:?}): {report}",
        out.status.code()
    );
    for name in [
        "a3kv:time_to_first_token_seconds_bucket",
        "a3kv:e2e_request_latency_seconds_bucket",
        "a3kv:num_requests_running",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        text.contains("a3kv:time_to_first_token_seconds_bucket{le=\"2\"}"),
        "2 s bucket missing"
    );

    // 2. Dashboard: promtool syntax-checks every expression (as recording rules) and each
    //    metric it names is exported by the live server.
    let exprs = dashboard_exprs();
    assert!(
        exprs.len() >= 12,
        "dashboard has {} expressions",
        exprs.len()
    );
    let exported = exported_names(&text);
    let mut rules = String::from("groups:\n  - name: a3kv-dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$__interval", "1m");
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&e).expect("quote")
        ));
        for m in metric_names(&e) {
            assert!(
                exported.contains(&m),
                "dashboard expression {e:?} reads {m}, which the live server does not export"
            );
        }
    }
    let rules_path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&rules_path, rules).expect("write rules");
    let out = run_tool(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(&rules_path),
        "promtool check rules",
    );
    assert!(
        out.status.success(),
        "dashboard PromQL: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // 3. A real Prometheus scrapes the server and answers histogram_quantile over TTFT.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let cfg = format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: a3kv\n    static_configs:\n      - targets: ['{}']\n", s.addr);
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, cfg).expect("write config");
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus runs (apt-get install -y prometheus)");
    let _guard = ChildGuard(prom);
    let q = "histogram_quantile(0.9, sum by (le) (a3kv:time_to_first_token_seconds_bucket))";
    let c = client();
    let mut last = Value::Null;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(r) = c
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .await
        else {
            continue;
        };
        let Ok(v) = r.json::<Value>().await else {
            continue;
        };
        let value = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok());
        if let Some(x) = value {
            assert!(x.is_finite() && x > 0.0, "TTFT p90 {x}: {v}");
            return;
        }
        last = v;
    }
    panic!("Prometheus never answered {q}: {last}");
}
