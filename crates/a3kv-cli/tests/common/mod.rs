//! Helpers shared by the integration tests of the `a3kv` binary: finding the default model
//! (skip with a note only outside CI), running the binary from the repository root, one-shot
//! HTTP/1.1 requests over loopback, reading Prometheus samples, and a fleet of real processes
//! behind the gateway ([`fleet`]).
#![allow(dead_code)]

pub mod fleet;

use std::process::Command;
use std::time::Duration;

/// The repository root (the binary and scripts run from there).
pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Whether the default model is present; outside CI its absence skips the test with a note.
pub fn model_present() -> bool {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must fetch the model (scripts/fetch-model.sh)"
    );
    eprintln!("SKIP: model absent; run scripts/fetch-model.sh");
    false
}

/// The `a3kv` binary of this build, run from the repository root.
pub fn a3kv() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_a3kv"));
    c.current_dir(ROOT);
    c
}

/// A response read to its end.
pub struct Response {
    /// HTTP status (0 if the reply was not HTTP).
    pub status: u16,
    /// Status line and headers.
    pub head: String,
    /// The body (a chunked one decoded).
    pub body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request with extra `headers` over a fresh loopback connection, read to the end
/// (at most 120 s of silence). Panics, naming the request, if the exchange fails.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// [`request`] that reports a failed exchange (refused, reset, timed out) as an error; a
/// response cut short mid-body is returned with what arrived.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Response> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw.get(split + 4..).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut r = Response {
        status,
        head,
        body: String::new(),
    };
    let chunked = r
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    r.body = String::from_utf8_lossy(&if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    })
    .to_string();
    Ok(r)
}

/// The payload of a chunked body (what arrived of it, for a cut stream).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_field = String::from_utf8_lossy(&rest[..eol]);
        let size_hex = size_field.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(rest.len());
        out.extend_from_slice(&rest[start..end]);
        rest = rest.get(end + 2..).unwrap_or_default();
    }
    out
}

/// One HTTP/1.1 request over a fresh loopback connection: `(status, body)`.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let r = request(addr, method, path, &[], body);
    (r.status, r.body)
}

/// Sum of a Prometheus sample family's values whose label set contains `labels`.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
