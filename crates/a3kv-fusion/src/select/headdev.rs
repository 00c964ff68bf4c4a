//! `hkdev` and `hkvdev`: the `kdev`/`kvdev` hybrids with each KV head's deviation scaled by
//! that head's mean over the document rows before the heads are summed. A plain sum over
//! heads lets the heads with the largest key and value norms decide which rows are stale
//! (models with massive activations put most of the squared difference in a few heads);
//! scaled, every head votes with the same weight, whatever its scale.

use a3kv_model::Tensor;

use super::hybrid::{a3_and_deviation, hybrid_scores, EQUAL_MIX};
use super::{ScoreInput, Selector};
use crate::selection::FusionParams;
use crate::Result;

/// Hybrid with per-head scaled deviations.
pub struct HeadDev {
    name: &'static str,
    /// Share of the V deviation in the staleness (the rest is the K deviation).
    v_share: f32,
}

/// Per-head scaled K deviation.
pub static HKDEV: HeadDev = HeadDev {
    name: "hkdev",
    v_share: 0.0,
};

/// Per-head scaled K and V deviations, equal shares.
pub static HKVDEV: HeadDev = HeadDev {
    name: "hkvdev",
    v_share: 0.5,
};

impl Selector for HeadDev {
    fn name(&self) -> &'static str {
        self.name
    }

    fn scores_at_check_layer(&self) -> bool {
        true
    }

    fn needs_cached_v(&self, _params: &FusionParams) -> bool {
        true
    }

    fn needs_cached_k(&self, _params: &FusionParams) -> bool {
        true
    }

    fn scores(&self, input: &ScoreInput<'_>, params: &FusionParams) -> Result<Vec<f32>> {
        Ok(self.scores_and_mass(input, params)?.0)
    }

    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let (a3, v_dev) = a3_and_deviation(input, params)?;
        let (Some(k_cached), Some(v_cached)) = (input.k_cached, input.v_cached) else {
            return Ok((hybrid_scores(&a3, &v_dev, EQUAL_MIX), Some(a3)));
        };
        let rows = input.prompt.doc_range();
        let k_dev = head_scaled_deviation(input.k_fresh, k_cached, rows.clone())?;
        let v_dev = head_scaled_deviation(input.v_fresh, v_cached, rows)?;
        let stale = hybrid_scores(&v_dev, &k_dev, self.v_share);
        Ok((hybrid_scores(&a3, &stale, EQUAL_MIX), Some(a3)))
    }
}

/// `Σ_h dev_h(j) / mean(dev_h)` for each row `j` in `rows`, where `dev_h(j) = Σ (a − b)²`
/// over head `h`'s dims and the mean runs over `rows` (`[H_kv, T, d]` both). A head whose
/// rows all agree adds nothing.
pub fn head_scaled_deviation(
    a: &Tensor,
    b: &Tensor,
    rows: std::ops::Range<usize>,
) -> Result<Vec<f32>> {
    let n = rows.len();
    let diff = (a.narrow(1, rows.start, n)? - b.narrow(1, rows.start, n)?)?;
    let per_head: Vec<Vec<f32>> = diff
        .sqr()?
        .sum(2)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec2()?;
    let mut out = vec![0f32; n];
    for head in per_head {
        let mean = head.iter().sum::<f32>() / n.max(1) as f32;
        if mean > 0.0 {
            for (o, x) in out.iter_mut().zip(&head) {
                *o += x / mean;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_head_is_scaled_by_its_own_mean() {
        // Head 0 deviations 1, 3 (mean 2); head 1 deviations 100, 300 (mean 200).
        let a = Tensor::from_vec(
            vec![1f32, 3f32.sqrt(), 10.0, 300f32.sqrt()],
            (2, 2, 1),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let b = a.zeros_like().unwrap();
        let got = head_scaled_deviation(&a, &b, 0..2).unwrap();
        // Row 0: 1/2 + 100/200; row 1: 3/2 + 300/200.
        assert!(
            (got[0] - 1.0).abs() < 1e-5 && (got[1] - 3.0).abs() < 1e-5,
            "{got:?}"
        );
        // A head with no deviation contributes nothing (no division by zero).
        let z = head_scaled_deviation(&b, &b, 0..2).unwrap();
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn on_a_tiny_model_it_is_exact_at_full_budget_and_keeps_the_budget() {
        for name in ["hkdev", "hkvdev"] {
            super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
                name,
            );
        }
    }
}
