//! `cacheblend` (CacheBlend): at the check layer, score each document row by how far its
//! fresh V deviates from its cached V, `Σ (V_fresh − V_cached)²` over heads and dims.

use a3kv_model::Tensor;

use super::{ScoreInput, Selector};
use crate::prompt::RagPrompt;
use crate::selection::FusionParams;
use crate::Result;

/// CacheBlend.
pub struct CacheBlend;

impl Selector for CacheBlend {
    fn name(&self) -> &'static str {
        "cacheblend"
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
        _params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let dev = match input.v_cached {
            Some(v_cached) => v_deviation(input.v_fresh, v_cached, input.prompt)?,
            None => Vec::new(), // no document rows
        };
        Ok((dev, None))
    }
}

/// CacheBlend's deviation `Σ (V_fresh − V_cached)²` over heads and dims, per document row.
/// `v_fresh`, `v_cached`: `[H_kv, T, d]`.
pub fn v_deviation(v_fresh: &Tensor, v_cached: &Tensor, prompt: &RagPrompt) -> Result<Vec<f32>> {
    let r = prompt.doc_range();
    let diff = (v_fresh.narrow(1, r.start, r.len())? - v_cached.narrow(1, r.start, r.len())?)?;
    Ok(diff
        .sqr()?
        .sum(2)?
        .sum(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?)
}
