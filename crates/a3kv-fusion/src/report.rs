//! The per-request fusion report: token accounting, phase times, selected rows.

use serde::{Deserialize, Serialize};

/// What a fused prefill did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FusionReport {
    /// Method name.
    pub method: String,
    /// Prompt rows `T`.
    pub prompt_tokens: usize,
    /// Rows served from cache and never recomputed (prefix + unselected documents).
    pub reused_tokens: usize,
    /// Document rows recomputed.
    pub recomputed_tokens: usize,
    /// Rows computed without a cache (the question; everything for `full`).
    pub fresh_tokens: usize,
    /// `recomputed / document rows` (1 for `full`).
    pub recompute_ratio: f64,
    /// Seconds spent rotating cached keys to their global positions.
    pub reposition_secs: f64,
    /// Seconds in the exact layers and the check layer (incl. selection).
    pub check_secs: f64,
    /// Seconds computing the selection scores.
    pub selection_secs: f64,
    /// Seconds in the selective layers.
    pub selective_secs: f64,
    /// Total seconds of the fused prefill.
    pub total_secs: f64,
    /// Selected document rows (global positions), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_positions: Option<Vec<u32>>,
}
