//! OpenAI request/response types and their validation into the engine's
//! [`GenerateRequest`] (house rule 7: handlers build valid requests; the engine trusts them).

use std::str::FromStr;

use a3kv_fusion::{FusionError, FusionOption, FusionParams, Method, OptionValue};
use a3kv_model::{ChatMessage, SamplingParams};
use a3kv_sched::{DocumentRef, GenerateRequest, PromptSpec, MAX_TOP_LOGPROBS};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::logprobs::MAX_COMPLETION_LOGPROBS;

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

/// The RAG `fusion` object: `"method"` (a registered selection method) and numeric options
/// named as in [`FusionOption`] (`recompute_ratio` — or `"auto"` —, `recompute_tokens`,
/// `sink_tokens`, `hybrid_weight`, `epic_tokens`, `pooling_width`, `check_layer`,
/// `auto_mass`, `auto_min_ratio`, `auto_max_ratio`). Fields not given keep
/// `engine.default_fusion`; naming another method starts from that method's own defaults.
/// Parsed and range-checked by the fusion crate ([`FusionParams::apply`]), like the CLI's
/// method specs; `null` means "not given".
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct FusionIn(pub serde_json::Map<String, Value>);

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
    /// Return each generated token's log-probability.
    pub logprobs: Option<bool>,
    /// Most likely alternatives per token, `0..=20` (needs `logprobs: true`).
    pub top_logprobs: Option<i64>,
    /// Everything else.
    #[serde(flatten)]
    pub common: CommonIn,
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// A string, or a list of exactly one string.
    pub prompt: Value,
    /// Log-probabilities of each token and of its `0..=5` most likely alternatives
    /// (`null` = none).
    pub logprobs: Option<i64>,
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
    let Some(FusionIn(fields)) = f else {
        return Ok(None);
    };
    let mut method = None;
    let mut options = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        let param = format!("fusion.{key}");
        if value.is_null() {
            continue;
        }
        if key == "method" {
            let name = value
                .as_str()
                .ok_or_else(|| invalid(&param, "method must be a string"))?;
            let m = Method::from_str(name).map_err(|_| {
                invalid(
                    &param,
                    format!(
                        "unknown fusion method {name:?}; allowed: {}",
                        Method::names()
                    ),
                )
            })?;
            method = Some(m);
            continue;
        }
        let opt = FusionOption::ALL
            .into_iter()
            .find(|o| o.name() == key)
            .ok_or_else(|| {
                invalid(
                    &param,
                    format!(
                        "unknown fusion field {key:?}; allowed: method, {}",
                        FusionOption::ALL.map(|o| o.name()).join(", ")
                    ),
                )
            })?;
        let x = match (opt, value) {
            (FusionOption::RecomputeRatio, Value::String(s)) if s == "auto" => OptionValue::Auto,
            (FusionOption::RecomputeRatio, _) => {
                value.as_f64().map(OptionValue::Number).ok_or_else(|| {
                    invalid(
                        &param,
                        format!("{key} must be a number in [0, 1] or \"auto\""),
                    )
                })?
            }
            _ => value
                .as_f64()
                .map(OptionValue::Number)
                .ok_or_else(|| invalid(&param, format!("{key} must be a number")))?,
        };
        options.push((opt, x));
    }
    default
        .apply(method, &options)
        .map(Some)
        .map_err(|e| match e {
            FusionError::InvalidOption { option, message } => {
                invalid(&format!("fusion.{option}"), message)
            }
            other => invalid("fusion", other.to_string()),
        })
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

/// Chat's `logprobs` and `top_logprobs` → alternatives per token (`None` = no logprobs).
/// As OpenAI: `top_logprobs` in `0..=20`, and only with `logprobs: true`.
fn chat_logprobs(logprobs: Option<bool>, top: Option<i64>) -> Result<Option<usize>, ApiError> {
    let max = MAX_TOP_LOGPROBS as i64;
    if let Some(n) = top.filter(|n| !(0..=max).contains(n)) {
        return Err(invalid(
            "top_logprobs",
            format!("top_logprobs {n} must be in 0..={max}"),
        ));
    }
    match (logprobs.unwrap_or(false), top) {
        (true, n) => Ok(Some(n.unwrap_or(0) as usize)),
        (false, Some(_)) => Err(invalid(
            "top_logprobs",
            "top_logprobs requires logprobs: true",
        )),
        (false, None) => Ok(None),
    }
}

/// The legacy completions `logprobs` (alternatives per token, `0..=5`).
fn completion_logprobs(logprobs: Option<i64>) -> Result<Option<usize>, ApiError> {
    let max = MAX_COMPLETION_LOGPROBS as i64;
    match logprobs {
        Some(n) if !(0..=max).contains(&n) => Err(invalid(
            "logprobs",
            format!("logprobs {n} must be in 0..={max}"),
        )),
        n => Ok(n.map(|n| n as usize)),
    }
}

/// Builds the request; `logprobs` is the validated number of alternatives per token.
fn finish(
    c: &CommonIn,
    request_id: &str,
    prompt: PromptSpec,
    fusion: Option<FusionParams>,
    ids: Vec<String>,
    logprobs: Option<usize>,
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
            logprobs,
            // The evaluation hook of the engine API; HTTP requests never carry it.
            first_token_logits: false,
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
        let logprobs = chat_logprobs(self.logprobs, self.top_logprobs)?;
        let docs = self.common.documents.as_deref().unwrap_or_default();
        if docs.is_empty() {
            return finish(
                &self.common,
                request_id,
                PromptSpec::Chat { messages: msgs },
                fusion,
                vec![],
                logprobs,
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
        finish(&self.common, request_id, prompt, fusion, ids, logprobs, lim)
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
        let logprobs = completion_logprobs(self.logprobs)?;
        let docs = self.common.documents.as_deref().unwrap_or_default();
        if docs.is_empty() {
            return finish(
                &self.common,
                request_id,
                PromptSpec::Text { prompt },
                fusion,
                vec![],
                logprobs,
                lim,
            );
        }
        let (refs, ids) = documents(docs, lim)?;
        let spec = PromptSpec::Rag {
            system: None,
            documents: refs,
            question: prompt,
        };
        finish(&self.common, request_id, spec, fusion, ids, logprobs, lim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use a3kv_fusion::Budget;

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
    fn logprobs_fields() {
        let m = serde_json::json!([{"role": "user", "content": "q"}]);
        let lp = |extra: Value| {
            let mut v = serde_json::json!({"messages": m});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            chat(v).map(|r| r.generate.logprobs)
        };
        assert_eq!(lp(serde_json::json!({})).unwrap(), None);
        assert_eq!(lp(serde_json::json!({"logprobs": false})).unwrap(), None);
        assert_eq!(lp(serde_json::json!({"logprobs": true})).unwrap(), Some(0));
        assert_eq!(
            lp(serde_json::json!({"logprobs": true, "top_logprobs": 20})).unwrap(),
            Some(20)
        );
        for bad in [
            serde_json::json!({"logprobs": true, "top_logprobs": 21}),
            serde_json::json!({"logprobs": true, "top_logprobs": -1}),
            serde_json::json!({"top_logprobs": 2}),
            serde_json::json!({"logprobs": false, "top_logprobs": 0}),
        ] {
            match lp(bad.clone()) {
                Err(ApiError::InvalidParam { param, .. }) => assert_eq!(param, "top_logprobs"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let completion = |v: Value| {
            serde_json::from_value::<CompletionRequest>(v)
                .unwrap()
                .validate("r", &lim())
                .map(|r| r.generate.logprobs)
        };
        assert_eq!(
            completion(serde_json::json!({"prompt": "p", "logprobs": 5})).unwrap(),
            Some(5)
        );
        assert_eq!(
            completion(serde_json::json!({"prompt": "p", "logprobs": null})).unwrap(),
            None
        );
        for n in [6, -1] {
            match completion(serde_json::json!({"prompt": "p", "logprobs": n})) {
                Err(ApiError::InvalidParam { param, .. }) => assert_eq!(param, "logprobs"),
                other => panic!("{n}: {other:?}"),
            }
        }
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
