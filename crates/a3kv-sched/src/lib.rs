//! a3kv-sched: the serving engine. A pipeline of supervised ractor actors on tokio —
//! Admission → ChunkLoader → RelevanceScorer → RecomputeBatcher → Decoder
//! (docs/design.md §4) — with all model math on a dedicated compute pool. [`Engine`] is the
//! API the HTTP server and the CLI use: `submit(request)` → a stream of [`EngineEvent`]s.
//!
//! Public surface: [`Engine`] and its API types (re-exported below, with the KV element
//! type's compute dtype, [`kv_candle_dtype`]), and [`metrics`] (every metric name,
//! description and bucket, for exporters). Benchmarks live in the CLI (`a3kv bench`) and use
//! this API and the model crate's only.
//! Prompt assembly and document chunking are fusion's (`a3kv_fusion::RagParts`); `a3kv
//! precompute` stores chunks through [`Engine::store_chunk`].
//!
//! Private layout: `api` (the contract types), `engine` (the handle), `actors` (one file
//! per actor), `prepare` (validation at the edge), `precompute` (precompute-and-store, the
//! one way a chunk enters the store), `steps` and `decode` (the batched
//! prefill/decode math with reference tests), `job`/`request`/`shared` (the data each hop
//! carries), `compute` (the compute pool), `gate` (the start-up fusion gate), `shadow` (production shadow prefills and the ratio
//! controller).

mod actors;
mod api;
mod compute;
mod convert;
mod decode;
mod engine;
mod gate;
mod job;
mod logprobs;
pub mod metrics;
mod precompute;
mod prepare;
mod request;
mod shadow;
mod shared;
mod steps;

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
pub use convert::candle_dtype as kv_candle_dtype;
pub use engine::Engine;
pub use gate::{GateConfig, GateReport};
pub use metrics::{describe_metrics, histogram_buckets};
pub use request::RequestTrace;
pub use shadow::ShadowConfig;
