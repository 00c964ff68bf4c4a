//! OpenAI response objects: whole completions, SSE chunks for both endpoints, and `usage`
//! with the `fusion` extension. A choice's `logprobs` comes from [`crate::logprobs`].

use a3kv_fusion::FusionReport;
use a3kv_sched::Usage;
use serde::Serialize;
use serde_json::{json, Value};

/// Which endpoint answers (decides the object names and the choice shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// Identity of one response (shared by all its chunks).
#[derive(Debug, Clone)]
pub struct ReplyMeta {
    /// Endpoint.
    pub endpoint: Endpoint,
    /// `chatcmpl-…` / `cmpl-…`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Served model name.
    pub model: String,
    /// The request asked for log-probabilities (choices carry a `logprobs` object).
    pub logprobs: bool,
}

impl ReplyMeta {
    /// New meta for a request id.
    pub fn new(endpoint: Endpoint, request_id: &str, model: &str) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{request_id}"),
            created: crate::state::unix_now(),
            model: model.to_string(),
            logprobs: false,
        }
    }

    /// Sets whether choices carry log-probabilities.
    pub fn with_logprobs(mut self, logprobs: bool) -> Self {
        self.logprobs = logprobs;
        self
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// The whole (non-streaming) response; `logprobs` is the choice's object or `null`.
    pub fn full(
        &self,
        text: &str,
        finish_reason: &str,
        usage: &UsageOut,
        logprobs: Value,
    ) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": logprobs,
            }),
            Endpoint::Completion => json!({
                "index": 0, "text": text, "finish_reason": finish_reason, "logprobs": logprobs,
            }),
        };
        json!({
            "id": self.id, "object": self.object(false), "created": self.created,
            "model": self.model, "choices": [choice], "usage": usage,
        })
    }

    /// One streamed piece of text; `first` adds the assistant role (chat);
    /// `finish_reason` closes the choice; `logprobs` is the piece's tokens' object or `null`.
    pub fn chunk(
        &self,
        text: &str,
        first: bool,
        finish_reason: Option<&str>,
        logprobs: Value,
    ) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let delta = match (first, finish_reason) {
                    (true, _) => json!({"role": "assistant", "content": text}),
                    (false, Some(_)) if text.is_empty() => json!({}),
                    _ => json!({"content": text}),
                };
                json!({"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": logprobs})
            }
            Endpoint::Completion => json!({
                "index": 0, "text": text, "finish_reason": finish_reason, "logprobs": logprobs,
            }),
        };
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [choice],
        })
    }

    /// The final usage chunk (`stream_options.include_usage`): empty `choices`.
    pub fn usage_chunk(&self, usage: &UsageOut) -> Value {
        json!({
            "id": self.id, "object": self.object(true), "created": self.created,
            "model": self.model, "choices": [], "usage": usage,
        })
    }
}

/// `usage.fusion`.
#[derive(Debug, Clone, Serialize)]
pub struct FusionUsage {
    /// Rows served from cache.
    pub reused_tokens: usize,
    /// Document rows recomputed.
    pub recomputed_tokens: usize,
    /// `recomputed / document rows`.
    pub recompute_ratio: f64,
    /// The ratio an adaptive budget (`recompute_ratio: "auto"`) chose, `k / (T−Q)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recompute_ratio_chosen: Option<f64>,
    /// Method name.
    pub method: String,
    /// A^3 hybrid weight, when the hybrid selected the rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hybrid_weight: Option<f32>,
    /// Attention-sink tokens per chunk, when any.
    #[serde(skip_serializing_if = "is_zero")]
    pub sink_tokens: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `usage`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageOut {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Sum.
    pub total_tokens: usize,
    /// Fusion report (RAG requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionUsage>,
}

impl From<&Usage> for UsageOut {
    fn from(u: &Usage) -> Self {
        Self {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            fusion: u.fusion.as_ref().map(|f: &FusionReport| FusionUsage {
                reused_tokens: f.reused_tokens,
                recomputed_tokens: f.recomputed_tokens,
                recompute_ratio: f.recompute_ratio,
                recompute_ratio_chosen: f.recompute_ratio_chosen,
                method: f.method.clone(),
                hybrid_weight: f.hybrid_weight,
                sink_tokens: f.sink_tokens,
            }),
        }
    }
}
