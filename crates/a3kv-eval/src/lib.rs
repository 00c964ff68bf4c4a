//! a3kv-eval: the data side of the evaluation harness.
//!
//! - [`datasets`]: `DatasetSpec` (`hotpotqa`, `needle`, `ruler`, `jsonl:PATH`), `load`,
//!   `data_hash`; every dataset yields [`EvalItem`]s.
//! - [`scoring`]: token F1 / exact match (SQuAD normalisation), substring, ROUGE-1,
//!   string-match-all.
//! - [`runner`]: `run_eval` over any [`EvalBackend`], with fidelity to `full` ([`fidelity`]).
//! - [`report`] and [`summary`]: the results JSON document and the stdout table.
//! - [`heatmap`]: the needle depth × length PNG.
//!
//! This crate depends on no other a3kv crate: the engine plugs in through `EvalBackend`, and
//! token counts come in as a `&dyn Fn(&str) -> usize`.

#![warn(missing_docs)]

pub mod datasets;
pub mod error;
pub mod fidelity;
pub mod heatmap;
pub mod item;
pub mod method;
pub mod report;
pub mod runner;
pub mod scoring;
pub mod summary;

pub use datasets::{
    data_hash, load, CountTokens, DatasetSpec, NeedleConfig, RulerConfig, RulerTask,
};
pub use error::EvalError;
pub use fidelity::kl_divergence;
pub use heatmap::{render_needle_heatmap, NeedleGrid};
pub use item::{Document, EvalItem};
pub use method::MethodSpec;
pub use report::{EvalResults, MethodRun};
pub use runner::{run_eval, BackendError, BackendOutput, EvalBackend, RunConfig};
pub use scoring::{ScorerKind, Scores};
pub use summary::{render_table, summarize, MethodSummary};
