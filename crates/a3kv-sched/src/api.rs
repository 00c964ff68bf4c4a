//! The engine's public contract with the HTTP server and the CLI: configuration, requests,
//! the per-request event stream, and the error enum (with `kind()` for labels/status).
//!
//! The server sees validated requests and token streams, never tensors.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use a3kv_fusion::{FusionParams, FusionReport};
use a3kv_model::{ChatMessage, SamplingParams};
use a3kv_store::{KvDtype, StoreConfig};

/// Engine configuration (the `[engine]` table of the server config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Requests admitted but not yet running; one more is rejected with
    /// [`EngineError::QueueFull`]. Default 64.
    pub max_waiting: usize,
    /// Requests in prefill or decode at once. Default 16.
    pub max_running: usize,
    /// Selected rows (over all requests) the recompute batcher puts in one batch. Default 4096.
    pub max_batch_tokens: usize,
    /// How long the batcher waits for more requests before launching a batch (ms). Default 2.
    pub batch_wait_ms: u64,
    /// Longest prompt in tokens (also capped by the model's context). Default 8192.
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` a request may ask for. Default 1024.
    pub max_new_tokens: usize,
    /// Most documents per request. Default 32.
    pub max_documents: usize,
    /// Documents longer than this are split into chunks of at most this many tokens.
    /// Default 512.
    pub chunk_tokens: usize,
    /// Chunk store tiers. Default: 2 GiB of memory, no disk.
    pub store: StoreConfig,
    /// Fusion parameters of requests that give none. Default: A^3, ratio 0.15.
    pub default_fusion: FusionParams,
    /// Threads of the compute pool that runs all model math (never the tokio workers).
    /// 0 = one per available core. Default 0.
    pub compute_threads: usize,
    /// Turns the recompute batcher off (each request's selective layers run alone); for
    /// benchmarks. Default true.
    pub batching: bool,
    /// The start-up fusion correctness gate (`gate.rs`).
    pub fusion_gate: crate::GateConfig,
    /// Compute device of the fused-prefill kernels: `cpu`, `cuda:N` (`cuda` = `cuda:0`; the
    /// server refuses to start without that device) or `auto` (CUDA device 0 if present,
    /// else the CPU, logged). Resolved by the server with `a3kv_cuda::resolve_device`.
    /// Default `cpu`.
    pub device: String,
    /// Production shadow sampling and the default-ratio controller (`shadow.rs`).
    pub fusion_shadow: crate::ShadowConfig,
    /// Element type of stored chunk KV and of request caches: `f32`, `f16` or `bf16` (half
    /// the memory, disk and transfer per token; rounded once when stored, math in f32).
    /// Chunks stored in another type (a disk or Redis tier filled earlier) are read as they
    /// are. Default `f32`.
    pub kv_dtype: KvDtype,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_waiting: 64,
            max_running: 16,
            max_batch_tokens: 4096,
            batch_wait_ms: 2,
            max_prompt_tokens: 8192,
            max_new_tokens: 1024,
            max_documents: 32,
            chunk_tokens: 512,
            store: StoreConfig {
                remote: None,
                memory_budget_bytes: 2 << 30,
                disk: None,
            },
            // A^3 mixed half and half with CacheBlend's V deviation: the lowest first-token KL
            // to full prefill of every method measured (README "Quality": HotpotQA, 200 items,
            // SmolLM2). `FusionParams::default()` stays the paper's plain A^3.
            default_fusion: FusionParams {
                hybrid_weight: Some(0.5),
                ..FusionParams::default()
            },
            compute_threads: 0,
            batching: true,
            fusion_gate: crate::GateConfig::default(),
            device: "cpu".into(),
            fusion_shadow: crate::ShadowConfig::default(),
            kv_dtype: KvDtype::F32,
        }
    }
}

/// A document of a RAG request: a stored document by id, or text (stored on the way, under
/// `id` if given, else under its content hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DocumentRef {
    /// A document stored earlier with [`crate::Engine::put_chunks`] (its id or content hash).
    Id(String),
    /// Inline text.
    Text {
        /// Optional id to store it under.
        id: Option<String>,
        /// The document text.
        text: String,
    },
}

/// What to generate from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PromptSpec {
    /// A chat conversation, rendered with the model's template (full prefill).
    Chat {
        /// The conversation.
        messages: Vec<ChatMessage>,
    },
    /// A RAG prompt `prefix | documents | question` served with KV fusion.
    Rag {
        /// System prompt (`None` = the template's default).
        system: Option<String>,
        /// Documents in prompt order.
        documents: Vec<DocumentRef>,
        /// The question.
        question: String,
    },
    /// Raw text, tokenised as is (full prefill).
    Text {
        /// The prompt.
        prompt: String,
    },
}

/// One generation request (validated by the engine at submit and at admission).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Caller's id (logs only, never a metric label).
    pub request_id: String,
    /// The prompt.
    pub prompt: PromptSpec,
    /// Fusion parameters (`None` = the engine default). Ignored for chat/text prompts.
    pub fusion: Option<FusionParams>,
    /// Sampling.
    pub sampling: SamplingParams,
    /// Most tokens to generate (`<= EngineConfig::max_new_tokens`).
    pub max_tokens: usize,
    /// Stop strings: generation ends (reason `stop`) once the text contains one; the text
    /// from the stop string on is not emitted.
    pub stop: Vec<String>,
    /// Log-probabilities: `None` = none; `Some(n)` = every token event carries
    /// [`Logprobs`] with the token's log-probability and its `n` most likely alternatives
    /// (`n <= MAX_TOP_LOGPROBS`).
    #[serde(default)]
    pub logprobs: Option<usize>,
    /// The evaluation and research hook of the API: `true` = the request's `Finished` usage
    /// carries the full-vocabulary logits of the first generated position
    /// ([`Usage::first_token_logits`]), the distribution `a3kv eval` compares between fusion
    /// methods (KL to full prefill, first-token agreement). Costs one `[vocab]` copy per
    /// request that asks, nothing otherwise. The HTTP server never sets it.
    #[serde(default)]
    pub first_token_logits: bool,
}

/// Most alternatives per token [`GenerateRequest::logprobs`] may ask for (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One token and its log-probability under the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// Token id.
    pub token_id: u32,
    /// The token's text on its own (lossy UTF-8 of `bytes`; special tokens: their text).
    pub token: String,
    /// The raw bytes the token stands for (may be part of a multi-byte character).
    pub bytes: Vec<u8>,
    /// Natural-log probability of the raw model distribution, `log_softmax(logits)`
    /// before temperature and top-p (see [`a3kv_model::TokenLogprobs`]).
    pub logprob: f32,
}

/// The log-probabilities of one generated token (requested with
/// [`GenerateRequest::logprobs`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logprobs {
    /// The generated token (always reported, in `top` or not).
    pub chosen: TokenLogprob,
    /// The `n` most likely tokens at this position, most likely first (ties to the lower id).
    pub top: Vec<TokenLogprob>,
}

/// What a request's stream carries: tokens, then exactly one `Finished` or `Failed`.
/// (`Finished` is large but sent once per request; boxing it would change the contract.)
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum EngineEvent {
    /// A generated token and the text it completes (may be empty mid-character).
    Token {
        /// Token id.
        token_id: u32,
        /// Newly completed text.
        text: String,
        /// The token's log-probabilities, when the request asked for them.
        logprobs: Option<Logprobs>,
    },
    /// Generation ended.
    Finished {
        /// `"stop"` or `"length"`.
        finish_reason: String,
        /// Token accounting, the fusion report and the time to first token.
        usage: Usage,
    },
    /// The request failed; nothing follows.
    Failed(EngineError),
}

/// Token accounting of a finished request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt rows.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// What the fused prefill did (`None` for chat/text prompts).
    pub fusion: Option<FusionReport>,
    /// Seconds from submit to the first token.
    pub ttft_secs: f64,
    /// Stage timestamps of the request (seconds from submit).
    #[serde(default)]
    pub trace: crate::RequestTrace,
    /// Logits `[vocab]` (f32, before temperature and top-p) of the first generated position,
    /// from which the first token was sampled; `Some` only when the request set
    /// [`GenerateRequest::first_token_logits`]. Present even when that token was a stop token
    /// (no `Token` event carried it). Never serialised.
    #[serde(skip)]
    pub first_token_logits: Option<Arc<[f32]>>,
}

/// Why a request was refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The waiting queue is full: retry later (HTTP 429/503 + Retry-After).
    #[error("the engine is overloaded (waiting queue full); retry after {retry_after_secs} s")]
    QueueFull {
        /// Suggested Retry-After.
        retry_after_secs: u64,
    },
    /// The prompt exceeds the limit (HTTP 413).
    #[error("prompt of {tokens} tokens exceeds the limit of {limit} tokens")]
    PromptTooLong {
        /// Prompt tokens.
        tokens: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many documents (HTTP 400/413).
    #[error("{count} documents exceed the limit of {limit}")]
    TooManyDocuments {
        /// Documents given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A document id that no tier holds (HTTP 404).
    #[error("unknown document or chunk {0:?}")]
    UnknownChunk(String),
    /// Bad input (HTTP 400).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The engine is stopping (HTTP 503).
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A bug or an internal failure (HTTP 500); the engine keeps serving.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Short, stable label for metrics and status mapping.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::QueueFull { .. } => "queue_full",
            EngineError::PromptTooLong { .. } => "prompt_too_long",
            EngineError::TooManyDocuments { .. } => "too_many_documents",
            EngineError::UnknownChunk(_) => "unknown_chunk",
            EngineError::InvalidRequest(_) => "invalid_request",
            EngineError::ShuttingDown => "shutting_down",
            EngineError::Internal(_) => "internal",
        }
    }
}

impl From<a3kv_fusion::FusionError> for EngineError {
    fn from(e: a3kv_fusion::FusionError) -> Self {
        use a3kv_fusion::FusionError as F;
        use a3kv_model::ModelError as M;
        match e {
            F::InvalidParameter(m) => EngineError::InvalidRequest(m),
            F::EmptyQuestion => EngineError::InvalidRequest("the question is empty".into()),
            F::Model(M::ContextOverflow { tokens, limit }) => {
                EngineError::PromptTooLong { tokens, limit }
            }
            F::Model(M::EmptyInput) => EngineError::InvalidRequest("empty input".into()),
            F::Model(M::TokenOutOfRange { id, vocab_size }) => EngineError::InvalidRequest(
                format!("token id {id} out of range (vocabulary {vocab_size})"),
            ),
            F::Model(M::Tokenizer(m)) => EngineError::InvalidRequest(format!("tokenizer: {m}")),
            other => EngineError::Internal(other.to_string()),
        }
    }
}

impl From<a3kv_model::ModelError> for EngineError {
    fn from(e: a3kv_model::ModelError) -> Self {
        a3kv_fusion::FusionError::Model(e).into()
    }
}

impl From<a3kv_store::StoreError> for EngineError {
    fn from(e: a3kv_store::StoreError) -> Self {
        EngineError::Internal(format!("chunk store: {e}"))
    }
}

/// A stored document as the chunk API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkInfo {
    /// Document id (given, or the content hash hex).
    pub id: String,
    /// Tokens over all its chunks.
    pub tokens: usize,
    /// KV bytes over all its chunks.
    pub bytes: u64,
    /// Slowest tier holding one of its chunks now: `memory`, `disk` or `none`.
    pub tier: String,
    /// Whether it is pinned in memory.
    pub pinned: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_serde() {
        let c: EngineConfig = serde_json::from_str(r#"{"max_waiting": 3}"#).unwrap();
        assert_eq!(c.max_waiting, 3);
        assert_eq!(c.store.memory_budget_bytes, 2 << 30);
        assert!(c.store.disk.is_none());
        assert_eq!(c.default_fusion.method, a3kv_fusion::Method::A3);
        assert_eq!(c.default_fusion.hybrid_weight, Some(0.5));
        assert!(serde_json::from_str::<EngineConfig>(r#"{"max_wait": 3}"#).is_err());
        assert_eq!(
            EngineError::QueueFull {
                retry_after_secs: 1
            }
            .kind(),
            "queue_full"
        );
    }
}
