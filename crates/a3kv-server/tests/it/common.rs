//! Shared helpers: model discovery (skip with a note only when the model is absent and `CI`
//! is unset), the shared server, the test lock, SSE reading and metric scraping.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use a3kv_server::state::AppState;
use a3kv_server::ServerConfig;
use futures::StreamExt;
use serde_json::Value;

/// The default model, or `None` (test skipped) when it is absent outside CI.
pub fn model_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{} is missing in CI (scripts/fetch-model.sh fetches it)",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: {} absent; run scripts/fetch-model.sh",
        p.display()
    );
    None
}

/// A light configuration for tests: loopback, port 0, small limits.
pub fn test_config(model: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig {
        listen: "127.0.0.1:0".into(),
        ..ServerConfig::default()
    };
    c.model.path = model.display().to_string();
    c.engine.max_prompt_tokens = 1024;
    c.engine.max_new_tokens = 512;
    c.engine.max_documents = 4;
    c.engine.max_running = 8;
    c.engine.max_waiting = 64;
    c.engine.store.memory_budget_bytes = 256 << 20;
    c.limits.max_body_bytes = 64 << 10;
    c.limits.default_max_tokens = 8;
    c.limits.max_concurrent_requests = 64;
    c.limits.request_timeout_secs = 120;
    c.shutdown.drain_secs = 60;
    c.log.level = "warn".into();
    c
}

/// The server most tests share (started once, on its own runtime thread).
pub struct Shared {
    /// Bound address.
    pub addr: SocketAddr,
    /// Its state (engine handle).
    pub state: AppState,
}

static SHARED: OnceLock<Option<Shared>> = OnceLock::new();

/// The shared server, or `None` when the model is absent (skip).
pub fn shared() -> Option<&'static Shared> {
    SHARED
        .get_or_init(|| {
            let model = model_path()?;
            let cfg = test_config(&model);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().expect("runtime");
                rt.block_on(async move {
                    let h = a3kv_server::start(cfg, false)
                        .await
                        .expect("shared server starts");
                    tx.send(Shared {
                        addr: h.addr,
                        state: h.state.clone(),
                    })
                    .expect("send");
                    std::future::pending::<()>().await;
                });
            });
            Some(
                rx.recv_timeout(Duration::from_secs(300))
                    .expect("shared server started in time"),
            )
        })
        .as_ref()
}

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serialises tests that depend on the load of the process.
pub async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    LOCK.lock().await
}

/// An HTTP client with a bounded timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .expect("client")
}

/// `http://addr`.
pub fn base(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Posts a chat body to `/v1/chat/completions`; returns the status and the JSON answer.
pub async fn post_chat(addr: SocketAddr, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = client()
        .post(format!("{}/v1/chat/completions", base(addr)))
        .json(body)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

/// Reads an SSE response to its end; returns the `data:` payloads.
pub async fn read_sse(resp: reqwest::Response) -> Vec<String> {
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("sse chunk")));
    }
    sse_data(&buf)
}

/// The `data:` payloads of an SSE text.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| {
            let lines: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
        .collect()
}

/// Concatenated streamed text of a chat SSE (`delta.content`) or completion (`text`).
pub fn streamed_text(data: &[String]) -> String {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            let c = v.get("choices")?.get(0)?;
            c.pointer("/delta/content")
                .or_else(|| c.get("text"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect()
}

/// The `/metrics` text.
pub async fn scrape(addr: SocketAddr) -> String {
    let r = client()
        .get(format!("{}/metrics", base(addr)))
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    r.text().await.expect("metrics text")
}

/// Sum of the samples of `name` whose labels contain `label` (e.g. `err="dropped"`).
pub fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' '))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A small RAG chat body.
pub fn rag_chat(question: &str, max_tokens: u32, stream: bool) -> Value {
    serde_json::json!({
        "messages": [{"role": "user", "content": question}],
        "documents": [
            {"text": "The Eiffel Tower is a wrought-iron tower in Paris, completed in 1889."},
            {"text": "Mount Fuji is the highest mountain in Japan, at 3,776 metres."}
        ],
        "fusion": {"method": "a3", "recompute_ratio": 0.15},
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

/// Asks the small RAG chat of [`rag_chat`] ("Where is the Eiffel Tower?", 8 tokens, greedy),
/// asserts a 200, and returns the answer text.
pub async fn ask_eiffel(addr: SocketAddr) -> String {
    let r = client()
        .post(format!("{}/v1/chat/completions", base(addr)))
        .json(&rag_chat("Where is the Eiffel Tower?", 8, false))
        .send()
        .await
        .expect("send");
    let status = r.status();
    let v: Value = r.json().await.expect("json");
    assert_eq!(status, 200, "{v}");
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .expect("content")
        .to_string()
}
