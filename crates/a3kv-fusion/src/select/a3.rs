//! `a3` (A^3, arXiv 2511.17560): at the check layer, score each document row by how much
//! the question attends to it ([`crate::a3::a3_scores`], the paper's score, unchanged);
//! with `hybrid_weight` set, mixed with CacheBlend's deviation ([`super::hybrid`]). An
//! adaptive budget is sized by the question's attention mass in both cases.

use super::cacheblend::v_deviation;
use super::hybrid::hybrid_scores;
use super::{ScoreInput, Selector};
use crate::a3::a3_scores;
use crate::selection::FusionParams;
use crate::Result;

/// A^3.
pub struct A3;

impl Selector for A3 {
    fn name(&self) -> &'static str {
        "a3"
    }

    fn scores_at_check_layer(&self) -> bool {
        true
    }

    fn takes_hybrid_weight(&self) -> bool {
        true
    }

    fn needs_cached_v(&self, params: &FusionParams) -> bool {
        params.hybrid_weight.is_some()
    }

    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let a3 = a3_scores(
            input.q_question,
            input.k_fresh,
            input.prompt.prefix_len(),
            params.pooling_width,
        )?;
        match (params.hybrid_weight, input.v_cached) {
            (Some(w), Some(v_cached)) => {
                let dev = v_deviation(input.v_fresh, v_cached, input.prompt)?;
                Ok((hybrid_scores(&a3, &dev, w), Some(a3)))
            }
            _ => Ok((a3, None)),
        }
    }
}
