//! Server-sent events for OpenAI-style streams: `SseParser` turns arbitrary byte chunks into
//! event payloads (`data:` lines joined, dispatched at a blank line), and `parse_chunk` reads
//! one payload (`[DONE]`, a completion chunk, a usage chunk or an error object).

use serde_json::Value;

use crate::record::FusionUsage;

/// Longest line accepted before the stream is declared malformed (a server that never sends a
/// newline must not grow memory without bound).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The stream is not valid SSE (a line longer than the limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseTooLong;

/// Incremental SSE parser; feed it bytes as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// A parser with empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the payloads of events completed by them, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseTooLong> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line, &mut out);
            } else {
                if self.line.len() >= MAX_LINE_BYTES {
                    return Err(SseTooLong);
                }
                self.line.push(b);
            }
        }
        Ok(out)
    }

    /// Ends the stream: returns a last event left without its blank line, if any.
    pub fn finish(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, &mut out);
        }
        out.extend(self.data.take());
        out
    }

    fn line_done(&mut self, raw: &[u8], out: &mut Vec<String>) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            out.extend(self.data.take());
            return;
        }
        let line = String::from_utf8_lossy(raw);
        // Only `data` matters here; comments (`:`) and `event`/`id`/`retry` are skipped.
        if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => self.data = Some(rest.to_string()),
            }
        }
    }
}

/// The useful content of one event payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// The payload was `[DONE]`.
    pub done: bool,
    /// Non-empty generated text (`choices[0].delta.content`, or `choices[0].text`).
    pub content: Option<String>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<u64>,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// `usage.fusion`.
    pub fusion: Option<FusionUsage>,
    /// `error.message` (or the error value as text) when the server sent an error object.
    pub error: Option<String>,
}

/// Reads one payload. Returns `None` when it is neither `[DONE]` nor a JSON object.
pub fn parse_chunk(payload: &str) -> Option<Chunk> {
    let payload = payload.trim();
    if payload == "[DONE]" {
        return Some(Chunk {
            done: true,
            ..Chunk::default()
        });
    }
    let v: Value = serde_json::from_str(payload).ok()?;
    let obj = v.as_object()?;
    let mut chunk = Chunk::default();
    if let Some(err) = obj.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| err.to_string(), str::to_string);
        chunk.error = Some(msg);
        return Some(chunk);
    }
    let first = obj.get("choices").and_then(|c| c.get(0));
    let text = first.and_then(|c| {
        c.get("delta")
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .or_else(|| c.get("text").and_then(Value::as_str))
    });
    chunk.content = text.filter(|t| !t.is_empty()).map(str::to_string);
    if let Some(u) = obj.get("usage").filter(|u| u.is_object()) {
        chunk.completion_tokens = u.get("completion_tokens").and_then(Value::as_u64);
        chunk.prompt_tokens = u.get("prompt_tokens").and_then(Value::as_u64);
        chunk.fusion = u
            .get("fusion")
            .and_then(|f| serde_json::from_value::<FusionUsage>(f.clone()).ok());
    }
    Some(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_crlf() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(
            p.feed(b":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n")
                .unwrap(),
            vec!["{\"a\":1}"]
        );
        assert_eq!(p.feed(b"\nevent: e\ndata:[DONE]").unwrap(), vec!["x\ny"]);
        assert_eq!(p.finish(), vec!["[DONE]"]);
        assert!(p.finish().is_empty());
    }

    #[test]
    fn utf8_split_mid_character() {
        let mut p = SseParser::new();
        let s = "data: é\n\n".as_bytes();
        assert!(p.feed(&s[..7]).unwrap().is_empty());
        assert_eq!(p.feed(&s[7..]).unwrap(), vec!["é"]);
    }

    #[test]
    fn parses_content_usage_done_error() {
        let c = parse_chunk(r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#).unwrap();
        assert_eq!(c.content.as_deref(), Some("Hi"));
        let c =
            parse_chunk(r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#).unwrap();
        assert_eq!(c.content, None);
        let c = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":90,"completion_tokens":4,
               "fusion":{"reused_tokens":80,"recomputed_tokens":12,"recompute_ratio":0.15,"method":"a3"}}}"#,
        )
        .unwrap();
        assert_eq!((c.prompt_tokens, c.completion_tokens), (Some(90), Some(4)));
        assert_eq!(c.fusion.unwrap().method.as_deref(), Some("a3"));
        assert!(parse_chunk(" [DONE] ").unwrap().done);
        let e = parse_chunk(r#"{"error":{"message":"boom","type":"x","code":500}}"#).unwrap();
        assert_eq!(e.error.as_deref(), Some("boom"));
        assert_eq!(
            parse_chunk(r#"{"choices":[{"text":"ab"}]}"#)
                .unwrap()
                .content
                .as_deref(),
            Some("ab")
        );
        assert!(parse_chunk("not json").is_none());
        assert!(parse_chunk("[1,2]").is_none());
    }
}
