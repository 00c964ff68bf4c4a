//! `RequestRecord`: what was measured for one request (timings relative to its send time,
//! tokens, status, error kind), and `RequestErrorKind`, the label errors are counted by.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a request failed; the label in the report's error counts.
///
/// `connect`: no TCP connection. `stream_broken`: the connection ended or was reset before the
/// response completed (before the headers or mid-stream), or the stream ended without
/// `data: [DONE]`. `stream_error`: the server sent an `{"error": ..}` event mid-stream.
/// `bad_response`: a non-SSE body, malformed SSE/JSON, or an unexpected status.
/// `aborted`: still in flight at the drain deadline. `cancelled`: abandoned by the client on
/// purpose (`--cancel-fraction`), counted apart from failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestErrorKind {
    /// HTTP 429 Too Many Requests.
    #[serde(rename = "http_429")]
    Http429,
    /// Any other 4xx status.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// Any 5xx status (503 overload included).
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// Could not connect.
    Connect,
    /// The per-request timeout expired.
    Timeout,
    /// The connection or stream ended early.
    StreamBroken,
    /// The server reported an error inside the stream.
    StreamError,
    /// The response could not be understood.
    BadResponse,
    /// Cut off by the run's drain deadline.
    Aborted,
    /// Abandoned by the client by design (`--cancel-fraction`); not a failure.
    Cancelled,
}

impl RequestErrorKind {
    /// The label, e.g. `"http_429"`, `"stream_broken"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Http429 => "http_429",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::StreamBroken => "stream_broken",
            Self::StreamError => "stream_error",
            Self::BadResponse => "bad_response",
            Self::Aborted => "aborted",
            Self::Cancelled => "cancelled",
        }
    }

    /// The kind for a non-success HTTP status.
    pub fn from_status(status: u16) -> Self {
        match status {
            429 => Self::Http429,
            400..=499 => Self::Http4xx,
            500..=599 => Self::Http5xx,
            _ => Self::BadResponse,
        }
    }
}

impl fmt::Display for RequestErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The a3kv `usage.fusion` extension, as reported by the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FusionUsage {
    /// Document tokens whose cached KV was reused.
    #[serde(default)]
    pub reused_tokens: u64,
    /// Document tokens recomputed.
    #[serde(default)]
    pub recomputed_tokens: u64,
    /// recomputed / document tokens.
    #[serde(default)]
    pub recompute_ratio: f64,
    /// The fusion method the server applied.
    #[serde(default)]
    pub method: Option<String>,
}

/// Measurements of one request. Times are seconds; `sent_at_secs` is from the run start, the
/// others from the moment the request was sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the trace.
    pub index: usize,
    /// Pool indices of the cited documents, in prompt order (the trace's content: distinct
    /// documents over a run, for counting the distinct chunks a fleet had to compute).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs: Vec<usize>,
    /// Send time, seconds from the run start.
    pub sent_at_secs: f64,
    /// Sent during warm-up: excluded from the statistics.
    pub warmup: bool,
    /// HTTP status, if headers arrived.
    pub http_status: Option<u16>,
    /// Failure kind; `None` for a success.
    pub error: Option<RequestErrorKind>,
    /// Time to the first non-empty content delta.
    pub ttft_secs: Option<f64>,
    /// Time to `[DONE]` (or to the failure).
    pub e2e_secs: f64,
    /// Gaps between consecutive content deltas.
    pub itl_secs: Vec<f64>,
    /// Output tokens: `usage.completion_tokens` when reported, else the number of content deltas.
    pub output_tokens: u64,
    /// `usage.prompt_tokens` when reported.
    pub prompt_tokens: Option<u64>,
    /// Number of non-empty content deltas received.
    pub content_chunks: u64,
    /// `usage.fusion` when reported.
    pub fusion: Option<FusionUsage>,
}

impl RequestRecord {
    /// True when the request completed without error.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// True when the client abandoned the request on purpose.
    pub fn cancelled(&self) -> bool {
        self.error == Some(RequestErrorKind::Cancelled)
    }

    /// Time per output token after the first: `(e2e - ttft) / (output_tokens - 1)`; `None`
    /// for failures and responses of fewer than two tokens.
    pub fn tpot_secs(&self) -> Option<f64> {
        match (self.ok(), self.ttft_secs) {
            (true, Some(ttft)) if self.output_tokens > 1 => {
                Some((self.e2e_secs - ttft).max(0.0) / (self.output_tokens - 1) as f64)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_kinds_and_labels() {
        assert_eq!(
            RequestErrorKind::from_status(429),
            RequestErrorKind::Http429
        );
        assert_eq!(
            RequestErrorKind::from_status(404),
            RequestErrorKind::Http4xx
        );
        assert_eq!(
            RequestErrorKind::from_status(503),
            RequestErrorKind::Http5xx
        );
        assert_eq!(
            RequestErrorKind::from_status(302),
            RequestErrorKind::BadResponse
        );
        let json = serde_json::to_string(&RequestErrorKind::Http429).unwrap();
        assert_eq!(json, "\"http_429\"");
        assert_eq!(
            serde_json::to_string(&RequestErrorKind::StreamBroken).unwrap(),
            format!("\"{}\"", RequestErrorKind::StreamBroken.as_str())
        );
    }

    #[test]
    fn tpot_needs_two_tokens_and_success() {
        let mut r = RequestRecord {
            ttft_secs: Some(0.1),
            e2e_secs: 0.5,
            output_tokens: 5,
            ..Default::default()
        };
        assert!((r.tpot_secs().unwrap() - 0.1).abs() < 1e-12);
        r.output_tokens = 1;
        assert_eq!(r.tpot_secs(), None);
        r.output_tokens = 5;
        r.error = Some(RequestErrorKind::Timeout);
        assert_eq!(r.tpot_secs(), None);
    }
}
