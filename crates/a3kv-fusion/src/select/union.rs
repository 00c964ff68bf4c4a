//! `headattn_union`: the rows the question reads most, kept whatever their staleness, beside
//! the rows of the deep-relevance/V-deviation mix (`headattn_vdev`). Two ranked lists are
//! merged: one pick from the per-head relevance's list for every [`MIX_PICKS_PER_RELEVANCE`]
//! picks from the mix's list, skipping rows already taken, until the budget is spent.
//!
//! Why: the mix ranks a row by the sum of two normalised scores, so a row the question
//! reads sharply but whose cached values barely moved can rank below stale rows the question
//! ignores. On Qwen2.5-Coder's RULER variable tracking (a chain of assignments the answer
//! follows) the mix loses the chain where the relevance alone keeps it, while on HotpotQA
//! the mix is ahead of the relevance alone (README "Quality"). The merge does not depend on
//! the budget: row `i` scores `−min(R·rank_rel(i), rank_mix(i))` with `R` the picks ratio,
//! so the top `k` of the scores are the top `k/(R+1)`-ish of the relevance joined with the
//! top of the mix, for any `k` (fixed, token or adaptive budgets alike).

use super::cacheblend::v_deviation;
use super::hybrid::{hybrid_scores, EQUAL_MIX};
use super::rank::ranks;
use super::{PassRelevance, ScoreInput, Selector};
use crate::selection::FusionParams;
use crate::{FusionError, Result};

/// How many rows the mix's list gives for each row the relevance's list gives.
pub const MIX_PICKS_PER_RELEVANCE: usize = 2;

/// The relevance's top merged with the mix's top.
pub struct HeadAttnUnion;

/// The registered merge.
pub static HEADATTN_UNION: HeadAttnUnion = HeadAttnUnion;

impl Selector for HeadAttnUnion {
    fn name(&self) -> &'static str {
        "headattn_union"
    }

    fn scores_at_check_layer(&self) -> bool {
        true
    }

    fn takes_hybrid_weight(&self) -> bool {
        true
    }

    fn needs_cached_v(&self, _params: &FusionParams) -> bool {
        true
    }

    fn question_pass_relevance(&self, _params: &FusionParams) -> Option<PassRelevance> {
        Some(PassRelevance::PerHead)
    }

    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let relevance = input
            .question_profile
            .ok_or_else(|| {
                FusionError::InvalidParameter(format!(
                    "{} ran without its question pass",
                    self.name()
                ))
            })?
            .to_vec();
        let Some(v_cached) = input.v_cached else {
            return Ok((relevance.clone(), Some(relevance)));
        };
        let deviation = v_deviation(input.v_fresh, v_cached, input.prompt)?;
        let mix = hybrid_scores(
            &relevance,
            &deviation,
            params.hybrid_weight.unwrap_or(EQUAL_MIX),
        );
        Ok((merged_scores(&relevance, &mix), Some(relevance)))
    }
}

/// Row `i` scores `n − min(R·rank(relevance)_i, rank(mix)_i)` (ranks 1-based, `R` =
/// [`MIX_PICKS_PER_RELEVANCE`]): the top `k` are the union of the two lists' tops, the
/// mix's list `R` times as deep as the relevance's.
pub fn merged_scores(relevance: &[f32], mix: &[f32]) -> Vec<f32> {
    let n = relevance.len();
    ranks(relevance)
        .into_iter()
        .zip(ranks(mix))
        .map(|(r, m)| (n * MIX_PICKS_PER_RELEVANCE - (MIX_PICKS_PER_RELEVANCE * r).min(m)) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::select_with_sinks;

    /// The top `k` of the merged scores hold the relevance's top `⌈k/3⌉`-ish and fill up
    /// from the mix's list: a row the question reads most is kept though the mix ranks it
    /// last.
    #[test]
    fn the_merge_keeps_the_relevance_top_beside_the_mix_top() {
        // Row 0: the question's favourite, last in the mix. Rows 1..: the mix's order.
        let relevance = [0.9, 0.01, 0.02, 0.03, 0.04, 0.0];
        let mix = [0.0, 0.5, 0.4, 0.3, 0.2, 0.1];
        let s = merged_scores(&relevance, &mix);
        assert_eq!(select_with_sinks(&s, 1, &[]), vec![1]);
        assert_eq!(select_with_sinks(&s, 3, &[]), vec![0, 1, 2]);
        // Deeper budgets take two from the mix for each one from the relevance.
        assert_eq!(select_with_sinks(&s, 4, &[]), vec![0, 1, 2, 3]);
        let mix_only = select_with_sinks(&mix, 3, &[]);
        assert_eq!(mix_only, vec![1, 2, 3]);
        // Identical lists: the merge is that order.
        let same = merged_scores(&mix, &mix);
        assert_eq!(select_with_sinks(&same, 3, &[]), vec![1, 2, 3]);
    }

    #[test]
    fn is_exact_at_full_budget_and_keeps_the_budget() {
        super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
            "headattn_union",
        );
    }
}
