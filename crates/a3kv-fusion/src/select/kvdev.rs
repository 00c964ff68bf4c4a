//! `kvdev` and `kdev`: the A^3/CacheBlend hybrid (equal mix) with a staleness that counts
//! keys. CacheBlend measures how far a row's fresh V at the check layer is from its cached V;
//! a stale key misdirects attention just as a stale value misinforms it. The K deviation is
//! the fresh RoPE'd K against the cached K re-positioned to the same position, so it is
//! position-free like the V deviation. `kvdev`: staleness = the mean of the normalised V and
//! K deviations; `kdev`: the K deviation alone.

use a3kv_model::Tensor;

use super::hybrid::{a3_and_deviation, hybrid_scores, EQUAL_MIX};
use super::{ScoreInput, Selector};
use crate::selection::{normalise, FusionParams};
use crate::Result;

/// Hybrid with key and value deviation.
pub struct KvDev {
    name: &'static str,
    /// Share of the V deviation in the staleness (the rest is the K deviation).
    v_share: f32,
}

/// The registered key-and-value hybrid.
pub static KVDEV: KvDev = KvDev {
    name: "kvdev",
    v_share: 0.5,
};

/// `kdev`: the K deviation alone as the staleness (the best of the issue #16 screen).
pub static KDEV: KvDev = KvDev {
    name: "kdev",
    v_share: 0.0,
};

impl Selector for KvDev {
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
        let Some(k_cached) = input.k_cached else {
            return Ok((hybrid_scores(&a3, &v_dev, EQUAL_MIX), Some(a3)));
        };
        let k_dev = row_deviation(input.k_fresh, k_cached, input.prompt.doc_range())?;
        let stale = hybrid_scores(&v_dev, &normalise(&k_dev), self.v_share);
        Ok((hybrid_scores(&a3, &stale, EQUAL_MIX), Some(a3)))
    }
}

/// `Σ (a − b)²` over heads and dims of each row in `rows` (`[H_kv, T, d]` both).
pub fn row_deviation(a: &Tensor, b: &Tensor, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
    let diff = (a.narrow(1, rows.start, rows.len())? - b.narrow(1, rows.start, rows.len())?)?;
    Ok(diff
        .sqr()?
        .sum(2)?
        .sum(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_deviation_sums_squares_per_row() {
        let a = Tensor::from_vec(
            vec![1f32, 2., 3., 4., 5., 6., 7., 8.],
            (2, 2, 2),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let b = a.zeros_like().unwrap();
        // Row 0: 1+4 (head 0) + 25+36 (head 1); row 1: 9+16 + 49+64.
        assert_eq!(row_deviation(&a, &b, 0..2).unwrap(), vec![66.0, 138.0]);
        assert_eq!(row_deviation(&a, &b, 1..2).unwrap(), vec![138.0]);
    }

    #[test]
    fn on_a_tiny_model_it_is_exact_at_full_budget_and_keeps_the_budget() {
        for name in ["kvdev", "kdev"] {
            super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
                name,
            );
        }
    }
}
