//! `rank`: A^3's question attention and CacheBlend's deviation merged by rank instead of
//! by value (reciprocal rank fusion, Cormack et al. 2009): a row scores
//! `1/(60 + rank_a3) + 1/(60 + rank_dev)`. The hybrid's normalised sum depends on how
//! concentrated each score is on a given prompt (a few stale chunk-start rows can hold most
//! of the deviation mass); ranks do not, so the mix is the same on every data set.
//! `headattn_rank` fuses the per-head deep relevance of `headattn` (a question pass over
//! every layer) with the V deviation the same way.

use super::cacheblend::v_deviation;
use super::hybrid::a3_and_deviation;
use super::{PassRelevance, ScoreInput, Selector};
use crate::selection::FusionParams;
use crate::{FusionError, Result};

/// Reciprocal rank fusion of a question relevance and CacheBlend's deviation.
pub struct Rank {
    name: &'static str,
    /// The relevance: A^3's score at the check layer (`None`) or a question pass's.
    pass: Option<PassRelevance>,
}

/// The registered rank fusion of A^3 and CacheBlend.
pub static RANK: Rank = Rank {
    name: "rank",
    pass: None,
};

/// The rank fusion of `headattn`'s per-head deep relevance and CacheBlend.
pub static HEADATTN_RANK: Rank = Rank {
    name: "headattn_rank",
    pass: Some(PassRelevance::PerHead),
};

/// The usual reciprocal-rank-fusion constant.
const RRF_K: f32 = 60.0;

impl Selector for Rank {
    fn name(&self) -> &'static str {
        self.name
    }

    fn scores_at_check_layer(&self) -> bool {
        true
    }

    fn needs_cached_v(&self, _params: &FusionParams) -> bool {
        true
    }

    fn question_pass_relevance(&self, _params: &FusionParams) -> Option<PassRelevance> {
        self.pass
    }

    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let (a3, dev) = match (self.pass, input.v_cached) {
            (None, _) => a3_and_deviation(input, params)?,
            (Some(_), None) => return Ok((Vec::new(), None)),
            (Some(_), Some(v_cached)) => {
                let relevance = input.question_profile.ok_or_else(|| {
                    FusionError::InvalidParameter(format!(
                        "{} ran without its question pass",
                        self.name
                    ))
                })?;
                (
                    relevance.to_vec(),
                    v_deviation(input.v_fresh, v_cached, input.prompt)?,
                )
            }
        };
        let (ra, rd) = (ranks(&a3), ranks(&dev));
        let s = ra
            .iter()
            .zip(&rd)
            .map(|(&a, &d)| 1.0 / (RRF_K + a as f32) + 1.0 / (RRF_K + d as f32))
            .collect();
        Ok((s, Some(a3)))
    }
}

/// 1-based rank of every score, highest first, ties to the lower index.
pub fn ranks(s: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..s.len()).collect();
    idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
    let mut r = vec![0; s.len()];
    for (pos, i) in idx.into_iter().enumerate() {
        r[i] = pos + 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_one_based_highest_first() {
        assert_eq!(ranks(&[0.5, 2.0, 0.5, 1.0]), vec![3, 1, 4, 2]);
        // A row first on one score and last on the other beats one in the middle of both
        // only when the middle is far enough down.
        let f = |a: usize, d: usize| 1.0 / (RRF_K + a as f32) + 1.0 / (RRF_K + d as f32);
        assert!(f(1, 1000) > f(100, 100));
        assert!(f(1, 1000) < f(20, 20));
    }

    #[test]
    fn on_a_tiny_model_it_is_exact_at_full_budget_and_keeps_the_budget() {
        for name in ["rank", "headattn_rank"] {
            super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
                name,
            );
        }
    }
}
