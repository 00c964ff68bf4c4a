//! The A^3/CacheBlend hybrid score: `w·a3 + (1−w)·cacheblend` of the two scores, each
//! normalised to sum 1, so neither scale dominates. `a3` uses it when `hybrid_weight` is set.

use super::cacheblend::v_deviation;
use super::ScoreInput;
use crate::a3::a3_scores;
use crate::selection::{normalise, FusionParams};
use crate::Result;

/// The weight of the A^3 side in the selections that mix both scores with no weight of
/// their own (`floor`, `window`, `progressive`): equal shares of the two normalised scores,
/// as the server's default hybrid.
pub const EQUAL_MIX: f32 = 0.5;

/// The equal-mix hybrid score with A^3's score as the mass (for `"auto"` budgets): what the
/// selections built on the hybrid (`floor`, `window`, `progressive`) rank by.
pub fn equal_mix_with_mass(
    input: &ScoreInput<'_>,
    params: &FusionParams,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let (a3, dev) = a3_and_deviation(input, params)?;
    Ok((hybrid_scores(&a3, &dev, EQUAL_MIX), Some(a3)))
}

/// A^3's question attention (smoothed with `params.pooling_width`) and CacheBlend's
/// deviation, one per document row each. Without a cached V (no document rows) both are
/// empty.
pub fn a3_and_deviation(
    input: &ScoreInput<'_>,
    params: &FusionParams,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let Some(v_cached) = input.v_cached else {
        return Ok((Vec::new(), Vec::new()));
    };
    let a3 = a3_scores(
        input.q_question,
        input.k_fresh,
        input.prompt.prefix_len(),
        params.pooling_width,
    )?;
    let dev = v_deviation(input.v_fresh, v_cached, input.prompt)?;
    Ok((a3, dev))
}

/// Mixes question attention `a3` and V deviation `deviation` (same length) with weight `w`
/// on the A^3 side.
pub fn hybrid_scores(a3: &[f32], deviation: &[f32], w: f32) -> Vec<f32> {
    let (a, b) = (normalise(a3), normalise(deviation));
    a.iter()
        .zip(&b)
        .map(|(x, y)| w * x + (1.0 - w) * y)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_the_normalised_scores() {
        let h = hybrid_scores(&[1.0, 3.0], &[10.0, 30.0], 0.5);
        assert!((h[0] - 0.25).abs() < 1e-6 && (h[1] - 0.75).abs() < 1e-6);
        assert_eq!(hybrid_scores(&[1.0, 0.0], &[0.0, 1.0], 1.0), vec![1.0, 0.0]);
        assert_eq!(hybrid_scores(&[1.0, 0.0], &[0.0, 1.0], 0.0), vec![0.0, 1.0]);
    }
}
