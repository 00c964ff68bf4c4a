//! The per-request fusion report: token accounting, phase times, selected rows.

use serde::{Deserialize, Serialize};

/// What a fused prefill did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FusionReport {
    /// Method name.
    pub method: String,
    /// A^3 / CacheBlend mix of the selection score, when the A^3 hybrid ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hybrid_weight: Option<f32>,
    /// Attention-sink tokens added per chunk (0 = none).
    #[serde(default)]
    pub sink_tokens: usize,
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
    /// With an adaptive budget (`recompute_ratio: "auto"`) and a scoring method: the ratio
    /// it chose, `k / (T−Q)` (the units of a fixed `recompute_ratio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recompute_ratio_chosen: Option<f64>,
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
    /// The arithmetic floor: this prefill's multiply-adds as a share of a full prefill's
    /// over the same prompt ([`crate::cost::floor_share`]; 1 for `full`).
    #[serde(default)]
    pub flop_floor: f64,
    /// Selected document rows (global positions), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected_positions: Option<Vec<u32>>,
}

impl FusionReport {
    /// Fills the token accounting for a fused prompt in which `recomputed` document rows
    /// (plus every question row) were recomputed: fresh = question, reused = the rest.
    pub fn account(&mut self, prompt: &crate::RagPrompt, recomputed: usize) {
        let n_doc = prompt.doc_range().len();
        let q = prompt.question_len();
        self.fresh_tokens = q;
        self.recomputed_tokens = recomputed;
        self.reused_tokens = prompt.len() - q - recomputed;
        self.recompute_ratio = if n_doc > 0 {
            recomputed as f64 / n_doc as f64
        } else {
            0.0
        };
    }
}
