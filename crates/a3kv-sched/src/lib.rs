//! a3kv-sched: the serving engine. A pipeline of supervised ractor actors on tokio —
//! Admission → ChunkLoader → RelevanceScorer → RecomputeBatcher → Decoder
//! (docs/design.md §4) — with all model math on a dedicated compute pool. [`Engine`] is the
//! API the HTTP server and the CLI use: `submit(request)` → a stream of [`EngineEvent`]s.
//!
//! Layout: [`api`] (the contract types), [`engine`] (the handle), [`actors`] (one file per
//! actor), [`steps`] and [`decode`] (the batched prefill/decode math with reference
//! tests), [`metrics`] (every metric name, description and bucket), [`bench`] (the
//! scheduler benchmark).

pub mod actors;
pub mod api;
pub mod bench;
pub mod compute;
pub mod convert;
pub mod decode;
pub mod engine;
mod gate;
pub mod job;
pub mod logprobs;
pub mod metrics;
pub mod prepare;
pub mod request;
pub mod shared;
pub mod steps;

// The unit tests share the integration tests' helpers, which name this crate `a3kv_sched`.
#[cfg(test)]
extern crate self as a3kv_sched;
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;

pub use api::{
    ChunkInfo, DocumentRef, EngineConfig, EngineError, EngineEvent, GenerateRequest, Logprobs,
    PromptSpec, TokenLogprob, Usage, MAX_TOP_LOGPROBS,
};
pub use engine::Engine;
pub use gate::{GateConfig, GateReport};
pub use metrics::{describe_metrics, histogram_buckets};
pub use request::RequestTrace;
pub use shared::Stage;
