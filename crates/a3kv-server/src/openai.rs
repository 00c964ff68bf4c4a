//! OpenAI request/response types and their validation into the engine's
//! [`GenerateRequest`] (house rule 7: handlers build valid requests; the engine trusts them).

use std::str::FromStr;

use a3kv_fusion::{Budget, FusionParams, Method};
use a3kv_model::{ChatMessage, SamplingParams};
use a3kv_sched::{DocumentRef, GenerateRequest, PromptSpec};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// Per-request limits the edge checks (from the configuration).
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Served model name.
    pub model_name: String,
    /// `engine.max_new_tokens`.
    pub max_new_tokens: usize,
    /// `limits.default_max_tokens`.
    pub default_max_tokens: usize,
    /// `engine.max_documents`.
    pub max_documents: usize,
    /// `engine.default_fusion`: what a request's `fusion` fields start from.
    pub default_fusion: FusionParams,
}

impl EdgeLimits {
    /// The limits a server with configuration `cfg` checks, serving `model_name`.
    pub fn new(cfg: &crate::config::ServerConfig, model_name: String) -> Self {
        Self {
            model_name,
            max_new_tokens: cfg.engine.max_new_tokens,
            default_max_tokens: cfg.limits.default_max_tokens,
            max_documents: cfg.engine.max_documents,
            default_fusion: cfg.engine.default_fusion.clone(),
        }
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopIn {
    /// One stop string.
    One(String),
    /// Up to 4 stop strings.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// A RAG document: stored by `id`, or inline `text` (optionally stored under `id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentIn {
    /// Document id.
    pub id: Option<String>,
    /// Document text.
    pub text: Option<String>,
}

/// The `fusion` extension. Fields not given keep the server's `engine.default_fusion`;
/// naming another `method` drops the default's A^3-only `hybrid_weight` and its check layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionIn {
    /// `a3`, `cacheblend`, `epic`, `reuse` or `full`.
    pub method: Option<String>,
    /// Fraction of document tokens to recompute, in [0, 1].
    pub recompute_ratio: Option<f64>,
    /// Document tokens to recompute, instead of a ratio.
    pub recompute_tokens: Option<i64>,
    /// First tokens of every chunk added to the selection, out of the same budget.
    pub sink_tokens: Option<i64>,
    /// A^3 only: weight of A^3's question attention against CacheBlend's V deviation, in [0, 1].
    pub hybrid_weight: Option<f64>,
}

/// Largest `fusion.sink_tokens` accepted (a chunk is at most `engine.chunk_tokens` long).
const MAX_SINK_TOKENS: i64 = 1 << 16;

/// Fields shared by both endpoints.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonIn {
    /// Model name (must be the served one when given).
    pub model: Option<String>,
    /// Most tokens to generate.
    pub max_tokens: Option<i64>,
    /// Newer alias of `max_tokens` (chat).
    pub max_completion_tokens: Option<i64>,
    /// Sampling temperature in [0, 2]; 0 = greedy.
    pub temperature: Option<f64>,
    /// Nucleus mass in (0, 1].
    pub top_p: Option<f64>,
    /// RNG seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<StopIn>,
    /// Stream SSE chunks.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (only 1).
    pub n: Option<u32>,
    /// RAG documents.
    pub documents: Option<Vec<DocumentIn>>,
    /// Fusion parameters.
    pub fusion: Option<FusionIn>,
}

/// One input message; `content` is a string or a list of `{"type": "text", "text"}` parts.
#[derive(Debug, Clone, Deserialize)]
pub struct MessageIn {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Content.
    pub content: Value,
}

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// Conversation.
    pub messages: Vec<MessageIn>,
    /// Everything else.
    #[serde(flatten)]
    pub common: CommonIn,
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// A string, or a list of exactly one string.
    pub prompt: Value,
    /// Everything else.
    #[serde(flatten)]
    pub common: CommonIn,
}

/// A validated request: what the engine gets plus how to answer.
#[derive(Debug, Clone)]
pub struct ValidRequest {
    /// For the engine.
    pub generate: GenerateRequest,
    /// Stream SSE.
    pub stream: bool,
    /// Final usage chunk when streaming.
    pub include_usage: bool,
    /// Stored document ids to check before submitting (404 early).
    pub document_ids: Vec<String>,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParam {
        param: param.into(),
        message: message.into(),
    }
}

fn content_text(i: usize, v: &Value) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => {
                        return Err(invalid(
                            &param,
                            "content parts must be {\"type\": \"text\", \"text\": string}",
                        ))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(invalid(
            &param,
            "content must be a string or a list of text parts",
        )),
    }
}

fn messages(msgs: &[MessageIn]) -> Result<Vec<ChatMessage>, ApiError> {
    if msgs.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(invalid(
                        &format!("messages[{i}].role"),
                        format!("role {other:?} must be system, developer, user or assistant"),
                    ))
                }
            };
            Ok(ChatMessage {
                role: role.into(),
                content: content_text(i, &m.content)?,
            })
        })
        .collect()
}

fn documents(
    docs: &[DocumentIn],
    lim: &EdgeLimits,
) -> Result<(Vec<DocumentRef>, Vec<String>), ApiError> {
    if docs.len() > lim.max_documents {
        return Err(ApiError::TooManyDocuments {
            count: docs.len(),
            limit: lim.max_documents,
        });
    }
    let mut refs = Vec::with_capacity(docs.len());
    let mut ids = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        let param = format!("documents[{i}]");
        match (&d.id, &d.text) {
            (_, Some(t)) if t.trim().is_empty() => {
                return Err(invalid(&param, "document text must not be empty"))
            }
            (Some(id), _) if id.is_empty() || id.len() > 256 => {
                return Err(invalid(&param, "document id must be 1 to 256 characters"))
            }
            (id, Some(t)) => refs.push(DocumentRef::Text {
                id: id.clone(),
                text: t.clone(),
            }),
            (Some(id), None) => {
                ids.push(id.clone());
                refs.push(DocumentRef::Id(id.clone()));
            }
            (None, None) => return Err(invalid(&param, "a document needs an id or a text")),
        }
    }
    Ok((refs, ids))
}

fn fusion(f: &Option<FusionIn>, default: &FusionParams) -> Result<Option<FusionParams>, ApiError> {
    let Some(f) = f else { return Ok(None) };
    let mut p = default.clone();
    if let Some(m) = &f.method {
        let m = Method::from_str(m).map_err(|_| {
            invalid(
                "fusion.method",
                format!("unknown fusion method {m:?}; allowed: a3, cacheblend, epic, reuse, full"),
            )
        })?;
        if m != p.method {
            p = FusionParams {
                method: m,
                budget: p.budget,
                eviction: p.eviction,
                ..FusionParams::method(m)
            };
        }
    }
    match (f.recompute_ratio, f.recompute_tokens) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "fusion.recompute_tokens",
                "give recompute_ratio or recompute_tokens, not both",
            ))
        }
        (Some(r), None) if !(0.0..=1.0).contains(&r) => {
            return Err(invalid(
                "fusion.recompute_ratio",
                format!("recompute_ratio {r} must be in [0, 1]"),
            ))
        }
        (Some(r), None) => p.budget = Budget::Ratio(r),
        (None, Some(n)) if n < 0 => {
            return Err(invalid(
                "fusion.recompute_tokens",
                format!("recompute_tokens {n} must be >= 0"),
            ))
        }
        (None, Some(n)) => p.budget = Budget::Tokens(n as usize),
        (None, None) => {}
    }
    if let Some(n) = f.sink_tokens {
        if !(0..=MAX_SINK_TOKENS).contains(&n) {
            return Err(invalid(
                "fusion.sink_tokens",
                format!("sink_tokens {n} must be in [0, {MAX_SINK_TOKENS}]"),
            ));
        }
        p.sink_tokens = n as usize;
    }
    if let Some(w) = f.hybrid_weight {
        if p.method != Method::A3 {
            return Err(invalid(
                "fusion.hybrid_weight",
                format!(
                    "hybrid_weight applies to a3 only, not {}",
                    p.method.as_str()
                ),
            ));
        }
        if !(0.0..=1.0).contains(&w) {
            return Err(invalid(
                "fusion.hybrid_weight",
                format!("hybrid_weight {w} must be in [0, 1]"),
            ));
        }
        p.hybrid_weight = Some(w as f32);
    }
    Ok(Some(p))
}

fn common(
    c: &CommonIn,
    lim: &EdgeLimits,
) -> Result<(SamplingParams, usize, Vec<String>), ApiError> {
    if let Some(m) = &c.model {
        if !m.is_empty() && *m != lim.model_name {
            return Err(ApiError::ModelNotFound(m.clone()));
        }
    }
    if c.n.is_some_and(|n| n != 1) {
        return Err(invalid("n", "only n = 1 is supported"));
    }
    let (param, asked) = match (c.max_completion_tokens, c.max_tokens) {
        (Some(v), _) => ("max_completion_tokens", Some(v)),
        (None, v) => ("max_tokens", v),
    };
    let max_tokens = match asked {
        None => lim.default_max_tokens,
        Some(v) if v < 1 || v as u64 > lim.max_new_tokens as u64 => {
            return Err(invalid(
                param,
                format!("{param} {v} must be in 1..={}", lim.max_new_tokens),
            ))
        }
        Some(v) => v as usize,
    };
    let temperature = c.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(invalid(
            "temperature",
            format!("temperature {temperature} must be in [0, 2]"),
        ));
    }
    let top_p = c.top_p.unwrap_or(1.0);
    // Checked as the engine's f32 too: a tiny positive f64 would become 0 there and fail the
    // request only after its prefill.
    if !(top_p > 0.0 && top_p <= 1.0 && top_p as f32 > 0.0) {
        return Err(invalid("top_p", format!("top_p {top_p} must be in (0, 1]")));
    }
    let stop = match &c.stop {
        None => vec![],
        Some(StopIn::One(s)) => vec![s.clone()],
        Some(StopIn::Many(v)) => v.clone(),
    };
    if stop.len() > 4 || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(invalid(
            "stop",
            "stop must be up to 4 non-empty strings of at most 256 bytes",
        ));
    }
    let sampling = SamplingParams {
        temperature: temperature as f32,
        top_p: top_p as f32,
        seed: c.seed.unwrap_or(0),
    };
    Ok((sampling, max_tokens, stop))
}

fn finish(
    c: &CommonIn,
    request_id: &str,
    prompt: PromptSpec,
    fusion: Option<FusionParams>,
    ids: Vec<String>,
    lim: &EdgeLimits,
) -> Result<ValidRequest, ApiError> {
    let (sampling, max_tokens, stop) = common(c, lim)?;
    Ok(ValidRequest {
        generate: GenerateRequest {
            request_id: request_id.to_string(),
            prompt,
            fusion,
            sampling,
            max_tokens,
            stop,
        },
        stream: c.stream,
        include_usage: c.stream_options.as_ref().is_some_and(|o| o.include_usage),
        document_ids: ids,
    })
}

impl ChatRequest {
    /// Validates into a [`ValidRequest`]. With documents, the conversation must be system
    /// messages followed by one user message (the question): a RAG prompt has no history.
    pub fn validate(&self, request_id: &str, lim: &EdgeLimits) -> Result<ValidRequest, ApiError> {
        let msgs = messages(&self.messages)?;
        let fusion = fusion(&self.common.fusion, &lim.default_fusion)?;
        let docs = self.common.documents.as_deref().unwrap_or_default();
        if docs.is_empty() {
            return finish(
                &self.common,
                request_id,
                PromptSpec::Chat { messages: msgs },
                fusion,
                vec![],
                lim,
            );
        }
        let (refs, ids) = documents(docs, lim)?;
        let (last, rest) = msgs
            .split_last()
            .ok_or_else(|| invalid("messages", "messages must not be empty"))?;
        if last.role != "user" || rest.iter().any(|m| m.role != "system") {
            return Err(invalid(
                "messages",
                "with documents, messages must be system messages followed by one user message",
            ));
        }
        let system: Vec<&str> = rest.iter().map(|m| m.content.as_str()).collect();
        let prompt = PromptSpec::Rag {
            system: (!system.is_empty()).then(|| system.join("\n")),
            documents: refs,
            question: last.content.clone(),
        };
        finish(&self.common, request_id, prompt, fusion, ids, lim)
    }
}

impl CompletionRequest {
    /// Validates into a [`ValidRequest`]; with documents the prompt is the question.
    pub fn validate(&self, request_id: &str, lim: &EdgeLimits) -> Result<ValidRequest, ApiError> {
        let prompt = match &self.prompt {
            Value::String(s) => s.clone(),
            Value::Array(v) if v.len() == 1 && v[0].is_string() => {
                v[0].as_str().unwrap_or_default().to_string()
            }
            _ => {
                return Err(invalid(
                    "prompt",
                    "prompt must be a string or a list of one string",
                ))
            }
        };
        if prompt.is_empty() {
            return Err(invalid("prompt", "prompt must not be empty"));
        }
        let fusion = fusion(&self.common.fusion, &lim.default_fusion)?;
        let docs = self.common.documents.as_deref().unwrap_or_default();
        if docs.is_empty() {
            return finish(
                &self.common,
                request_id,
                PromptSpec::Text { prompt },
                fusion,
                vec![],
                lim,
            );
        }
        let (refs, ids) = documents(docs, lim)?;
        let spec = PromptSpec::Rag {
            system: None,
            documents: refs,
            question: prompt,
        };
        finish(&self.common, request_id, spec, fusion, ids, lim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> EdgeLimits {
        EdgeLimits {
            model_name: "m".into(),
            max_new_tokens: 100,
            default_max_tokens: 10,
            max_documents: 2,
            default_fusion: FusionParams {
                hybrid_weight: Some(0.5),
                ..FusionParams::default()
            },
        }
    }

    fn chat(v: Value) -> Result<ValidRequest, ApiError> {
        serde_json::from_value::<ChatRequest>(v)
            .map_err(|e| ApiError::InvalidJson(e.to_string()))?
            .validate("r1", &lim())
    }

    #[test]
    fn rag_chat_maps_to_rag_prompt() {
        let v = chat(serde_json::json!({
            "model": "m",
            "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "Q?"}]}],
            "documents": [{"id": "a"}, {"text": "T"}],
            "fusion": {"method": "cacheblend", "recompute_ratio": 0.3},
            "stop": "x", "seed": 7, "temperature": 0,
        }))
        .unwrap();
        assert_eq!(v.document_ids, vec!["a".to_string()]);
        assert_eq!(v.generate.max_tokens, 10);
        assert_eq!(v.generate.stop, vec!["x".to_string()]);
        assert_eq!(v.generate.sampling.seed, 7);
        let f = v.generate.fusion.unwrap();
        assert_eq!(
            (f.method, f.budget),
            (Method::CacheBlend, Budget::Ratio(0.3))
        );
        match v.generate.prompt {
            PromptSpec::Rag {
                system,
                documents,
                question,
            } => {
                assert_eq!(system.as_deref(), Some("S"));
                assert_eq!(question, "Q?");
                assert_eq!(documents[0], DocumentRef::Id("a".into()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fusion_fields_override_the_server_default() {
        let m = serde_json::json!([{"role": "user", "content": "q"}]);
        let fusion = |f: Value| {
            chat(serde_json::json!({"messages": m, "fusion": f}))
                .unwrap()
                .generate
                .fusion
                .unwrap()
        };
        // Only a budget: the default's method and hybrid weight stay.
        let f = fusion(serde_json::json!({"recompute_tokens": 64, "sink_tokens": 1}));
        assert_eq!(
            (f.method, f.budget, f.sink_tokens, f.hybrid_weight),
            (Method::A3, Budget::Tokens(64), 1, Some(0.5))
        );
        // The same method keeps them too; another method starts from its own defaults.
        assert_eq!(
            fusion(serde_json::json!({"method": "a3"})).hybrid_weight,
            Some(0.5)
        );
        let f = fusion(serde_json::json!({"method": "cacheblend"}));
        assert_eq!((f.method, f.hybrid_weight), (Method::CacheBlend, None));
        assert_eq!(
            fusion(serde_json::json!({"hybrid_weight": 0.0})).hybrid_weight,
            Some(0.0)
        );
        // No `fusion` object: the engine applies its default itself.
        let v = chat(serde_json::json!({"messages": m})).unwrap();
        assert!(v.generate.fusion.is_none());
    }

    #[test]
    fn bad_fields_name_their_param() {
        let param = |v: Value| match chat(v) {
            Err(ApiError::InvalidParam { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        let m = serde_json::json!([{"role": "user", "content": "q"}]);
        assert_eq!(param(serde_json::json!({"messages": []})), "messages");
        assert_eq!(
            param(serde_json::json!({"messages": m, "max_tokens": 0})),
            "max_tokens"
        );
        assert_eq!(
            param(serde_json::json!({"messages": m, "max_completion_tokens": 101})),
            "max_completion_tokens"
        );
        assert_eq!(
            param(serde_json::json!({"messages": m, "fusion": {"method": "x"}})),
            "fusion.method"
        );
        // Positive as f64 but 0 as the engine's f32 (found by edge_fuzz).
        assert_eq!(
            param(serde_json::json!({"messages": m, "top_p": 1e-300})),
            "top_p"
        );
        assert_eq!(
            param(serde_json::json!({"messages": m, "fusion": {"recompute_ratio": 2.0}})),
            "fusion.recompute_ratio"
        );
        for (fusion, field) in [
            (
                serde_json::json!({"recompute_ratio": 0.1, "recompute_tokens": 5}),
                "fusion.recompute_tokens",
            ),
            (
                serde_json::json!({"recompute_tokens": -1}),
                "fusion.recompute_tokens",
            ),
            (serde_json::json!({"sink_tokens": -2}), "fusion.sink_tokens"),
            (
                serde_json::json!({"hybrid_weight": 1.5}),
                "fusion.hybrid_weight",
            ),
            (
                serde_json::json!({"method": "epic", "hybrid_weight": 0.5}),
                "fusion.hybrid_weight",
            ),
        ] {
            assert_eq!(
                param(serde_json::json!({"messages": m, "fusion": fusion})),
                field
            );
        }
        assert_eq!(
            param(
                serde_json::json!({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}], "documents": [{"text": "t"}]})
            ),
            "messages"
        );
        assert!(matches!(
            chat(serde_json::json!({"model": "other", "messages": m})),
            Err(ApiError::ModelNotFound(_))
        ));
        assert!(matches!(
            chat(
                serde_json::json!({"messages": m, "documents": [{"text": "a"}, {"text": "b"}, {"text": "c"}]})
            ),
            Err(ApiError::TooManyDocuments { count: 3, limit: 2 })
        ));
    }
}
