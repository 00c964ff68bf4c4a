//! `full`: full prefill of every row, no cache read — the quality reference and the TTFT
//! baseline. The fused prefill runs it as a plain prefill.

use super::Selector;

/// Full prefill.
pub struct Full;

impl Selector for Full {
    fn name(&self) -> &'static str {
        "full"
    }

    fn is_full_prefill(&self) -> bool {
        true
    }

    fn scores_at_check_layer(&self) -> bool {
        false
    }
}
