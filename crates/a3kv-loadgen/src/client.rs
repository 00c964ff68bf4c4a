//! `LoadClient`: sends one streamed chat completion and measures it (TTFT at the first
//! non-empty content delta, inter-token gaps, E2E at `data: [DONE]`, usage), classifying
//! failures into [`RequestErrorKind`]. Never panics on what the server sends. Requests the
//! [`CancelPlan`] picks are abandoned mid-flight (the connection is dropped) and recorded as
//! `cancelled`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::cancel::{CancelAt, CancelPlan};
use crate::record::{FusionUsage, RequestErrorKind, RequestRecord};
use crate::route::RouteHeader;
use crate::sse::{parse_chunk, SseParser};
use crate::workload::{RequestSpec, Workload};
use crate::LoadgenError;

/// After `[DONE]`, how long to keep reading so the connection can be reused.
const DRAIN_AFTER_DONE: Duration = Duration::from_millis(200);
/// Upper bound on the TCP connect time, within the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How requests are shaped and bounded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientConfig {
    /// Full URL of the chat-completions endpoint.
    pub endpoint: String,
    /// The `model` field.
    pub model: String,
    /// Whole-request timeout (connect, headers and the full stream).
    #[serde(serialize_with = "ser_secs")]
    pub request_timeout: Duration,
    /// Put the documents into the prompt text instead of the `documents` extension.
    pub inline_documents: bool,
    /// `fusion.method`; with `recompute_ratio`, sent only with the `documents` extension.
    pub fusion_method: Option<String>,
    /// `fusion.recompute_ratio`.
    pub recompute_ratio: Option<f64>,
    /// Send `"ignore_eos": true` (vLLM-style) so outputs run to `max_tokens`.
    pub ignore_eos: bool,
    /// When not empty, request `i` sends `method_mix[i % len]` as `fusion.method` instead of
    /// `fusion_method`.
    pub method_mix: Vec<String>,
    /// Which requests the client abandons on purpose.
    pub cancel: CancelPlan,
    /// `--route-header`: the header carrying each request's routing key (the first cited
    /// document's id, see [`crate::route`]); none when `None`.
    pub route_header: Option<String>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[derive(Serialize)]
struct Message {
    role: &'static str,
    content: String,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct DocumentRef<'a> {
    id: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct Fusion<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recompute_ratio: Option<f64>,
}

/// The JSON body of `POST /v1/chat/completions` (docs/design.md §6.2).
#[derive(Serialize)]
pub struct ChatRequest<'a> {
    model: &'a str,
    messages: [Message; 1],
    max_tokens: u64,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    documents: Option<Vec<DocumentRef<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fusion: Option<Fusion<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignore_eos: Option<bool>,
}

impl ClientConfig {
    /// Builds the request body for `spec`: documents by the extension (with `fusion` when a
    /// method or ratio is set) or inlined into the prompt.
    pub fn body<'a>(&'a self, workload: &'a Workload, spec: &RequestSpec) -> ChatRequest<'a> {
        let docs = spec.docs.iter().filter_map(|&i| workload.doc(i));
        let (content, documents, fusion) = if self.inline_documents {
            let mut prompt = String::from("Answer the question using the documents.\n\n");
            for (n, d) in docs.enumerate() {
                prompt.push_str(&format!("[Document {}]\n{}\n\n", n + 1, d.text));
            }
            prompt.push_str("Question: ");
            prompt.push_str(&spec.question);
            (prompt, None, None)
        } else {
            let refs = docs
                .map(|d| DocumentRef {
                    id: &d.id,
                    text: &d.text,
                })
                .collect();
            let method = match self.method_mix.len() {
                0 => self.fusion_method.as_deref(),
                n => Some(self.method_mix[spec.index % n].as_str()),
            };
            let fusion = (method.is_some() || self.recompute_ratio.is_some()).then_some(Fusion {
                method,
                recompute_ratio: self.recompute_ratio,
            });
            (spec.question.clone(), Some(refs), fusion)
        };
        ChatRequest {
            model: &self.model,
            messages: [Message {
                role: "user",
                content,
            }],
            max_tokens: spec.max_tokens,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            documents,
            fusion,
            ignore_eos: self.ignore_eos.then_some(true),
        }
    }
}

/// What one exchange accumulated, kept outside the timeout so partial results survive it.
#[derive(Default)]
struct Progress {
    status: Option<u16>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    done_at: Option<Instant>,
    itl_secs: Vec<f64>,
    chunks: u64,
    completion_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    fusion: Option<FusionUsage>,
}

/// An HTTP client for one run; cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct LoadClient {
    http: reqwest::Client,
    cfg: ClientConfig,
    route: Option<RouteHeader>,
}

impl LoadClient {
    /// Builds the client (no proxies: targets are usually local). Errors with
    /// [`LoadgenError::InvalidArgs`] for a non-http(s) endpoint or a bad route header name,
    /// and [`LoadgenError::HttpClient`] if reqwest cannot be set up.
    pub fn new(cfg: ClientConfig) -> Result<Self, LoadgenError> {
        let url = reqwest::Url::parse(&cfg.endpoint)
            .map_err(|e| LoadgenError::InvalidArgs(format!("--target {:?}: {e}", cfg.endpoint)))?;
        if url.scheme() != "http" {
            return Err(LoadgenError::InvalidArgs(format!(
                "--target must be an http:// URL (no TLS support), got {}",
                cfg.endpoint
            )));
        }
        let route = cfg
            .route_header
            .as_deref()
            .map(RouteHeader::parse)
            .transpose()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(cfg.request_timeout.min(MAX_CONNECT_TIMEOUT))
            .build()?;
        Ok(Self { http, cfg, route })
    }

    /// The `POST` of `body` for request `spec`, with the routing header when configured.
    pub fn post(
        &self,
        workload: &Workload,
        spec: &RequestSpec,
        body: &ChatRequest<'_>,
    ) -> reqwest::RequestBuilder {
        let req = self.http.post(&self.cfg.endpoint).json(body);
        match self.route.as_ref().and_then(|r| r.header(workload, spec)) {
            Some((name, value)) => req.header(name, value),
            None => req,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Sends request `spec` and measures it. Never fails: errors are recorded in the result.
    /// `sent_at_secs` (from the run start) is copied into the record.
    pub async fn send(
        &self,
        workload: &Workload,
        spec: &RequestSpec,
        sent_at_secs: f64,
    ) -> RequestRecord {
        let body = self.cfg.body(workload, spec);
        let request = self.post(workload, spec, &body);
        let cancel = self.cfg.cancel.for_request(spec.index);
        let start = Instant::now();
        let mut p = Progress::default();
        let cut_at_first_token = cancel == Some(CancelAt::FirstToken);
        let run = tokio::time::timeout(
            self.cfg.request_timeout,
            self.exchange(request, &mut p, cut_at_first_token),
        );
        let outcome = match cancel {
            // Dropping the exchange drops the connection: the server sees the client leave.
            Some(CancelAt::AfterSecs(secs)) => tokio::select! {
                r = run => r,
                _ = tokio::time::sleep(Duration::from_secs_f64(secs)) => {
                    Ok(Err(RequestErrorKind::Cancelled))
                }
            },
            _ => run.await,
        };
        let error = match outcome {
            Err(_) => Some(RequestErrorKind::Timeout),
            Ok(Err(kind)) => Some(kind),
            Ok(Ok(())) => None,
        };
        let end = p.done_at.unwrap_or_else(Instant::now);
        let output_tokens = match (error, p.completion_tokens) {
            (None, Some(n)) => n,
            _ => p.chunks,
        };
        RequestRecord {
            index: spec.index,
            docs: spec.docs.clone(),
            sent_at_secs,
            warmup: false,
            http_status: p.status,
            error,
            ttft_secs: p.first_token.map(|t| t.duration_since(start).as_secs_f64()),
            e2e_secs: end.duration_since(start).as_secs_f64(),
            itl_secs: p.itl_secs,
            output_tokens,
            prompt_tokens: p.prompt_tokens,
            content_chunks: p.chunks,
            fusion: p.fusion,
        }
    }

    /// One request/response; with `cut_at_first_token`, returns `Cancelled` (dropping the
    /// stream) as soon as a content token arrives before `[DONE]`.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        p: &mut Progress,
        cut_at_first_token: bool,
    ) -> Result<(), RequestErrorKind> {
        let resp = request.send().await.map_err(|e| classify(&e))?;
        let status = resp.status();
        p.status = Some(status.as_u16());
        if !status.is_success() {
            return Err(RequestErrorKind::from_status(status.as_u16()));
        }
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if is_json {
            return Err(RequestErrorKind::BadResponse);
        }
        let mut stream = resp.bytes_stream();
        let mut parser = SseParser::new();
        while let Some(item) = stream.next().await {
            let bytes = item.map_err(|e| classify_body(&e))?;
            let payloads = parser
                .feed(&bytes)
                .map_err(|_| RequestErrorKind::BadResponse)?;
            if consume(payloads, p)? {
                // Read what little follows so the connection can go back to the pool.
                let _ = tokio::time::timeout(DRAIN_AFTER_DONE, async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
                return Ok(());
            }
            if cut_at_first_token && p.first_token.is_some() {
                return Err(RequestErrorKind::Cancelled);
            }
        }
        if consume(parser.finish(), p)? {
            return Ok(());
        }
        Err(RequestErrorKind::StreamBroken)
    }
}

/// Applies payloads to `p`; `Ok(true)` once `[DONE]` is seen.
fn consume(payloads: Vec<String>, p: &mut Progress) -> Result<bool, RequestErrorKind> {
    for payload in payloads {
        let chunk = parse_chunk(&payload).ok_or(RequestErrorKind::BadResponse)?;
        let now = Instant::now();
        if chunk.error.is_some() {
            return Err(RequestErrorKind::StreamError);
        }
        if chunk.done {
            p.done_at = Some(now);
            return Ok(true);
        }
        if chunk.content.is_some() {
            if let Some(prev) = p.last_token {
                p.itl_secs.push(now.duration_since(prev).as_secs_f64());
            }
            p.first_token.get_or_insert(now);
            p.last_token = Some(now);
            p.chunks += 1;
        }
        p.completion_tokens = chunk.completion_tokens.or(p.completion_tokens);
        p.prompt_tokens = chunk.prompt_tokens.or(p.prompt_tokens);
        if chunk.fusion.is_some() {
            p.fusion = chunk.fusion;
        }
    }
    Ok(false)
}

/// Kind for an error before the response headers.
fn classify(e: &reqwest::Error) -> RequestErrorKind {
    if e.is_timeout() {
        RequestErrorKind::Timeout
    } else if e.is_connect() {
        RequestErrorKind::Connect
    } else {
        RequestErrorKind::StreamBroken
    }
}

/// Kind for an error while reading the body.
fn classify_body(e: &reqwest::Error) -> RequestErrorKind {
    if e.is_timeout() {
        RequestErrorKind::Timeout
    } else {
        RequestErrorKind::StreamBroken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Corpus;
    use crate::dist::LengthDist;
    use crate::workload::{corpus_rng, WorkloadSpec};
    use serde_json::Value;

    fn cfg(inline: bool) -> ClientConfig {
        ClientConfig {
            endpoint: "http://127.0.0.1:1/v1/chat/completions".into(),
            model: "m".into(),
            request_timeout: Duration::from_secs(1),
            inline_documents: inline,
            fusion_method: Some("a3".into()),
            recompute_ratio: Some(0.15),
            ignore_eos: false,
            method_mix: vec![],
            cancel: CancelPlan::none(),
            route_header: None,
        }
    }

    fn workload() -> Workload {
        let spec = WorkloadSpec {
            num_docs: 4,
            doc_words: LengthDist::Fixed { n: 5 },
            zipf_exponent: 1.0,
            docs_per_request: LengthDist::Fixed { n: 2 },
            shuffle_docs: false,
            question_words: LengthDist::Fixed { n: 3 },
            output_tokens: LengthDist::Fixed { n: 7 },
            seed: 1,
        };
        Workload::new(spec, Corpus::synthetic(&mut corpus_rng(1))).unwrap()
    }

    #[test]
    fn body_with_documents_extension() {
        let (w, c) = (workload(), cfg(false));
        let spec = w.request(0);
        let v = serde_json::to_value(c.body(&w, &spec)).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["max_tokens"], 7);
        assert_eq!(v["messages"][0]["content"], spec.question.as_str());
        assert_eq!(v["documents"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["documents"][0]["text"],
            w.doc(spec.docs[0]).unwrap().text.as_str()
        );
        assert_eq!(v["fusion"]["method"], "a3");
        assert_eq!(v["fusion"]["recompute_ratio"], 0.15);
        assert!(v.get("ignore_eos").is_none());
    }

    #[test]
    fn method_mix_cycles_by_request_index() {
        let w = workload();
        let mut c = cfg(false);
        c.method_mix = vec!["a3".into(), "cacheblend".into(), "full".into()];
        let methods: Vec<Value> = (0..6)
            .map(|i| {
                serde_json::to_value(c.body(&w, &w.request(i))).unwrap()["fusion"]["method"].clone()
            })
            .collect();
        assert_eq!(
            methods,
            ["a3", "cacheblend", "full", "a3", "cacheblend", "full"].map(Value::from)
        );
    }

    #[test]
    fn body_with_inline_documents() {
        let (w, c) = (workload(), cfg(true));
        let spec = w.request(0);
        let v = serde_json::to_value(c.body(&w, &spec)).unwrap();
        assert!(v.get("documents").is_none() && v.get("fusion").is_none());
        let content = v["messages"][0]["content"].as_str().unwrap();
        assert!(content.contains(&w.doc(spec.docs[1]).unwrap().text));
        assert!(content.ends_with(&spec.question));
    }

    /// The routing header of the request as built for sending.
    fn route_of(c: &ClientConfig, w: &Workload, i: usize) -> Option<String> {
        let client = LoadClient::new(c.clone()).unwrap();
        let spec = w.request(i);
        let body = c.body(w, &spec);
        let req = client.post(w, &spec, &body).build().unwrap();
        assert_eq!(req.method(), reqwest::Method::POST);
        req.headers()
            .get("x-a3kv-route")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn route_header_only_with_the_flag_and_keyed_by_the_first_document() {
        let w = workload();
        let mut c = cfg(false);
        for i in 0..20 {
            assert_eq!(
                route_of(&c, &w, i),
                None,
                "no header without --route-header"
            );
        }
        c.route_header = Some("x-a3kv-route".into());
        let mut by_first_doc = std::collections::HashMap::new();
        for i in 0..40 {
            let spec = w.request(i);
            let key = route_of(&c, &w, i).expect("header set with --route-header");
            assert_eq!(key, w.doc(spec.docs[0]).unwrap().id);
            if let Some(prev) = by_first_doc.insert(spec.docs[0], key.clone()) {
                assert_eq!(prev, key, "same first document, same key");
            }
        }
        // Inlined documents carry the same key: routing does not depend on the body shape.
        let mut inline = cfg(true);
        inline.route_header = c.route_header.clone();
        assert_eq!(route_of(&inline, &w, 3), route_of(&c, &w, 3));
        c.route_header = Some("bad header".into());
        assert!(LoadClient::new(c).is_err());
    }

    #[test]
    fn rejects_non_http_target() {
        let mut c = cfg(false);
        c.endpoint = "https://127.0.0.1/x".into();
        assert!(LoadClient::new(c.clone()).is_err());
        c.endpoint = "not a url".into();
        assert!(LoadClient::new(c).is_err());
    }
}
