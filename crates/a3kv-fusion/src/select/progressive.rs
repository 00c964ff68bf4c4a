//! `progressive`: progressive filtering (CacheBlend's gradual filtering, ProphetKV's dual
//! stage). At the check layer the hybrid score (A^3 + CacheBlend, equal mix) selects
//! twice the budget as candidates; all of them are recomputed through the next layer, where
//! the hybrid is measured again over the candidates — the question's attention over the
//! fused keys and the V deviation, now on hidden states that already saw the fresh context —
//! and the best `k` (sinks first) go on alone. The candidates' extra layers cost compute
//! beyond an equal-`k` method: `FusionReport::flop_floor` counts them. (Ranking the
//! candidates by the deviation or the attention alone, narrowing three layers later, or
//! three times the budget as candidates did no better: README "Quality".)

use a3kv_model::Tensor;

use super::hybrid::{equal_mix_with_mass, hybrid_scores, EQUAL_MIX};
use super::{ScoreInput, Selector, Stage, StageInput};
use crate::a3::a3_scores;
use crate::selection::FusionParams;
use crate::Result;

/// Two-stage selection.
pub struct Progressive {
    name: &'static str,
    stage: Stage,
}

/// Twice the budget as candidates, narrowed one layer after the check layer.
pub static PROGRESSIVE: Progressive = Progressive {
    name: "progressive",
    stage: Stage {
        layers_after_check: 1,
        candidate_factor: 2.0,
    },
};

impl Selector for Progressive {
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
        equal_mix_with_mass(input, params)
    }

    fn stage(&self, _params: &FusionParams) -> Option<Stage> {
        Some(self.stage)
    }

    fn stage_scores(&self, input: &StageInput<'_>, params: &FusionParams) -> Result<Vec<f32>> {
        let n_cand = input.rows.len() - input.prompt.question_len();
        let dev = v_deviation_rows(input.v_rows, input.v_cached_rows, n_cand)?;
        // The question's attention at the stage layer, over the fused keys (fresh for the
        // candidates), read at the candidates.
        let q_question = input
            .q_rows
            .narrow(1, n_cand, input.prompt.question_len())?;
        let a3 = a3_scores(
            &q_question,
            input.k_fused,
            input.prompt.prefix_len(),
            params.pooling_width,
        )?;
        let p = input.prompt.prefix_len();
        let a3: Vec<f32> = input.rows[..n_cand]
            .iter()
            .map(|&r| a3[r as usize - p])
            .collect();
        Ok(hybrid_scores(&a3, &dev, EQUAL_MIX))
    }
}

/// CacheBlend's deviation `Σ (V_fresh − V_cached)²` over heads and dims of the first `n`
/// rows of `v_fresh` and `v_cached` (`[H_kv, ≥ n, d]`, the same rows in both).
pub fn v_deviation_rows(v_fresh: &Tensor, v_cached: &Tensor, n: usize) -> Result<Vec<f32>> {
    let diff = (v_fresh.narrow(1, 0, n)? - v_cached.narrow(1, 0, n)?)?;
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
    fn it_asks_for_a_second_stage() {
        let p = FusionParams::default();
        let s = PROGRESSIVE.stage(&p).unwrap();
        assert!(s.layers_after_check >= 1 && s.candidate_factor > 1.0);
        assert!(PROGRESSIVE.needs_cached_v(&p));
    }

    #[test]
    fn on_a_tiny_model_it_is_exact_at_full_budget_and_keeps_the_budget() {
        super::super::checks::scoring_selector_is_exact_at_full_budget_and_keeps_the_budget(
            "progressive",
        );
    }

    #[test]
    fn the_candidates_are_narrowed_to_the_budget_and_their_extra_layer_is_costed() {
        use a3kv_model::testing::{random_tensors, tiny_config};
        use a3kv_model::{Family, FingerprintBuilder, Model, ModelWeights};

        use crate::selection::{budget_k, Budget};
        use crate::{cost, fused_prefill, precompute_chunk, RagPrompt};

        // Five layers, so that layers after the stage (check 1, stage 2) exist.
        let cfg = a3kv_model::ModelConfig {
            num_layers: 5,
            ..tiny_config(Family::Llama)
        };
        let w = ModelWeights::build(
            &cfg,
            random_tensors(&cfg, 5).unwrap(),
            candle_core::DType::F32,
        )
        .unwrap();
        let model = Model::new(
            cfg,
            w,
            candle_core::DType::F32,
            candle_core::Device::Cpu,
            FingerprintBuilder::default().finish(),
        )
        .unwrap();
        let ids = |n: u32, seed: u32| -> Vec<u32> {
            (0..n).map(|i| (i * 5 + seed * 11 + 1) % 64).collect()
        };
        let chunks = vec![ids(20, 1), ids(25, 2), ids(15, 3)];
        let prompt = RagPrompt::from_ids(&ids(4, 0), &chunks, &ids(5, 9)).unwrap();
        let caches: Vec<_> = chunks
            .iter()
            .map(|c| precompute_chunk(&model, c, None).unwrap())
            .collect();
        let params = FusionParams {
            method: "progressive".parse().unwrap(),
            budget: Budget::Ratio(0.2),
            ..Default::default()
        };
        let out = fused_prefill(&model, &prompt, None, &caches, &params, true).unwrap();
        let k = budget_k(params.budget, &prompt);
        assert_eq!(out.report.recomputed_tokens, k);
        // The same final rows selected once cost less than with the dropped candidates.
        let mut rows = out.report.selected_positions.clone().unwrap();
        rows.extend(prompt.doc_range().end as u32..prompt.len() as u32);
        let once = cost::floor_share(model.config(), prompt.len(), 1, true, &rows);
        assert!(
            out.report.flop_floor > once + 1e-6,
            "{} {once}",
            out.report.flop_floor
        );
        // The candidates' recomputed values stay in the stage layer's cache: more rows of
        // layer 2 than of the last layer differ from the cached values.
        let changed = |l: usize| {
            let v = out.cache.layers[l].v().unwrap();
            let mut cached = Vec::new();
            for c in &caches {
                cached.push(c.values[l].clone());
            }
            let cached = a3kv_model::Tensor::cat(&cached, 1).unwrap();
            let d = prompt.doc_range();
            let diff = (v.narrow(1, d.start, d.len()).unwrap() - cached)
                .unwrap()
                .abs()
                .unwrap()
                .sum(2)
                .unwrap()
                .sum(0)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            diff.iter().filter(|&&x| x > 1e-6).count()
        };
        assert_eq!(changed(model.num_layers() - 1), k);
        assert_eq!(changed(2), (2 * k).min(prompt.doc_range().len()));
    }
}
