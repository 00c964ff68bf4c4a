//! `epic` (EPIC): recompute the first `epic_tokens` (`m`, default 16) tokens of every chunk,
//! where a chunk's own attention sink distorts its cached KV most.

use super::Selector;
use crate::prompt::RagPrompt;
use crate::selection::{chunk_starts, FusionParams};

/// EPIC.
pub struct Epic;

impl Selector for Epic {
    fn name(&self) -> &'static str {
        "epic"
    }

    fn scores_at_check_layer(&self) -> bool {
        false
    }

    fn select_static(&self, prompt: &RagPrompt, params: &FusionParams, _k: usize) -> Vec<usize> {
        chunk_starts(prompt, params.epic_tokens)
    }
}
