//! `kvdev`, `kdev`, `hkvdev` and `hkdev`: the A^3/CacheBlend hybrid (equal mix) with a
//! staleness that counts keys. CacheBlend measures how far a row's fresh V at the check layer
//! is from its cached V; a stale key misdirects attention just as a stale value misinforms
//! it. The K deviation is the fresh RoPE'd K against the cached K re-positioned to the same
//! position, so it is position-free like the V deviation. `kvdev`: staleness = the mean of the
//! normalised V and K deviations; `kdev`: the K deviation alone. The `h` variants scale each
//! KV head's squared deviation by that head's mean over the document rows before the heads
//! are summed: a plain sum lets the heads with the largest norms decide which rows are stale
//! (models with massive activations put most of the squared difference in a few heads);
//! scaled, every head votes with the same weight.

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
    /// Scale each KV head's deviation by its mean over the document rows
    /// ([`head_scaled_deviation`]) instead of summing the heads as they are.
    per_head: bool,
}

/// The registered key-and-value hybrid.
pub static KVDEV: KvDev = KvDev {
    name: "kvdev",
    v_share: 0.5,
    per_head: false,
};

/// `kdev`: the K deviation alone as the staleness (the best of the issue #16 screen).
pub static KDEV: KvDev = KvDev {
    name: "kdev",
    v_share: 0.0,
    per_head: false,
};

/// `hkdev`: `kdev` with per-head scaled deviations.
pub static HKDEV: KvDev = KvDev {
    name: "hkdev",
    v_share: 0.0,
    per_head: true,
};

/// `hkvdev`: `kvdev` with per-head scaled deviations.
pub static HKVDEV: KvDev = KvDev {
    name: "hkvdev",
    v_share: 0.5,
    per_head: true,
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
        let stale = if self.per_head {
            let k_dev = head_scaled_deviation(input.k_fresh, k_cached, rows.clone())?;
            let v_dev = head_scaled_deviation(input.v_fresh, v_cached, rows)?;
            hybrid_scores(&v_dev, &k_dev, self.v_share)
        } else {
            let k_dev = row_deviation(input.k_fresh, k_cached, rows)?;
            hybrid_scores(&v_dev, &normalise(&k_dev), self.v_share)
        };
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
        for name in ["kvdev", "kdev", "hkdev", "hkvdev"] {
            super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
                name,
            );
        }
    }
}
