//! a3kv fusion engine: chunk KV precompute, the fused prefill (A^3 and its baselines
//! `full`, `reuse`, `cacheblend`, `epic`), eviction, and decoding over the fused cache.
//!
//! Pure and synchronous over the model's layer API; no I/O. Selection methods are
//! [`Selector`]s in [`select`] (one file each); A^3's score is in [`a3`]; the fused prefill
//! every method shares is in [`fuse`]; request parameters are parsed in [`selection`].

pub mod a3;
pub mod chunk;
pub mod chunk_id;
pub mod cost;
pub mod decode;
pub mod error;
pub mod evict;
pub mod fuse;
pub mod prompt;
pub mod report;
pub mod select;
pub mod selection;

pub use chunk::{precompute_chunk, ChunkKv};
pub use chunk_id::ChunkId;
pub use decode::{generate, FinishReason, Generation};
pub use error::{FusionError, Result};
pub use fuse::{full_prefill, fused_prefill, CachedLayers, FusedPrefill, FusionRun, PromptCache};
pub use prompt::{split_ids, RagDocument, RagParts, RagPrompt, Segment, SegmentKind};
pub use report::FusionReport;
pub use select::{Method, ScoreInput, Selector, REGISTRY};
pub use selection::{
    auto_k, budget_k, chosen_ratio, AutoBudget, Budget, Eviction, FusionOption, FusionParams,
    OptionValue, DEFAULT_AUTO_MASS,
};
