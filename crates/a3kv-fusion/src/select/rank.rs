//! `rank`: A^3's question attention and CacheBlend's deviation merged by rank instead of
//! by value (reciprocal rank fusion, Cormack et al. 2009): a row scores
//! `1/(60 + rank_a3) + 1/(60 + rank_dev)`. The hybrid's normalised sum depends on how
//! concentrated each score is on a given prompt (a few stale chunk-start rows can hold most
//! of the deviation mass); ranks do not, so the mix is the same on every data set.

use super::hybrid::a3_and_deviation;
use super::{ScoreInput, Selector};
use crate::selection::FusionParams;
use crate::Result;

/// Reciprocal rank fusion of A^3 and CacheBlend.
pub struct Rank {
    name: &'static str,
}

/// The registered rank fusion.
pub static RANK: Rank = Rank { name: "rank" };

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

    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let (a3, dev) = a3_and_deviation(input, params)?;
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
        super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget("rank");
    }
}
