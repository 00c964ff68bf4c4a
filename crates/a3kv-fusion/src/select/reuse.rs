//! `reuse`: every cached row is kept as it is; only the question (and, when asked, the first
//! `sink_tokens` of every chunk, within the budget) is computed.

use super::Selector;
use crate::prompt::RagPrompt;
use crate::selection::{chunk_starts, FusionParams};

/// Full reuse.
pub struct Reuse;

impl Selector for Reuse {
    fn name(&self) -> &'static str {
        "reuse"
    }

    fn scores_at_check_layer(&self) -> bool {
        false
    }

    fn select_static(&self, prompt: &RagPrompt, params: &FusionParams, k: usize) -> Vec<usize> {
        chunk_starts(prompt, params.sink_tokens)
            .into_iter()
            .take(k)
            .collect()
    }
}
