//! `layerattn`, `layerattn_vdev` and `layerattn_kdev`: the question's relevance measured at
//! every layer instead of the check layer alone (ProphetKV's "layer-wise attention", issue
//! #16). Before the check layer scores, the question rows run alone through every layer over
//! the reused cache (what `reuse` computes: the cached rows re-positioned, the question
//! recomputed), and at each layer the question's attention over the document rows is
//! measured as A^3 measures it at its check layer; the per-layer distributions (each scaled
//! to sum 1) are averaged. At layer 1 of a small model the question's attention is a weak
//! signal (README "Quality"); deeper layers attend to what the answer needs. The pass costs
//! the question's rows through every layer (a few percent of a prefill) and reads every
//! cached layer before the selection, so the loader's transfer cannot overlap the check
//! layer for these methods.
//!
//! `layerattn` ranks by that average alone; `layerattn_vdev` mixes it equally with
//! CacheBlend's V deviation (the hybrid with deep relevance), `layerattn_kdev` with the K
//! deviation (`kdev` with deep relevance).

use a3kv_model::{Model, Tensor};

use super::cacheblend::v_deviation;
use super::hybrid::{hybrid_scores, EQUAL_MIX};
use super::kvdev::row_deviation;
use super::{ScoreInput, Selector};
use crate::a3::a3_scores;
use crate::fuse::{write_rows, CachedLayers};
use crate::prompt::RagPrompt;
use crate::selection::{normalise, FusionParams};
use crate::{FusionError, Result};

/// Which staleness the deep relevance is mixed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Staleness {
    /// None: relevance alone.
    None,
    /// CacheBlend's V deviation at the check layer.
    Value,
    /// The K deviation at the check layer (as `kdev`).
    Key,
}

/// Deep relevance, alone or mixed with a staleness.
pub struct LayerAttn {
    name: &'static str,
    staleness: Staleness,
}

/// `layerattn`: the layer-averaged question attention alone.
pub static LAYERATTN: LayerAttn = LayerAttn {
    name: "layerattn",
    staleness: Staleness::None,
};

/// `layerattn_vdev`: equal mix with the V deviation.
pub static LAYERATTN_VDEV: LayerAttn = LayerAttn {
    name: "layerattn_vdev",
    staleness: Staleness::Value,
};

/// `layerattn_kdev`: equal mix with the K deviation.
pub static LAYERATTN_KDEV: LayerAttn = LayerAttn {
    name: "layerattn_kdev",
    staleness: Staleness::Key,
};

impl Selector for LayerAttn {
    fn name(&self) -> &'static str {
        self.name
    }

    fn scores_at_check_layer(&self) -> bool {
        true
    }

    fn needs_cached_v(&self, _params: &FusionParams) -> bool {
        self.staleness != Staleness::None
    }

    fn needs_cached_k(&self, _params: &FusionParams) -> bool {
        self.staleness == Staleness::Key
    }

    fn needs_question_pass(&self, _params: &FusionParams) -> bool {
        true
    }

    fn scores_and_mass(
        &self,
        input: &ScoreInput<'_>,
        _params: &FusionParams,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let relevance = input
            .question_profile
            .ok_or_else(|| {
                FusionError::InvalidParameter(format!(
                    "{} ran without its question pass",
                    self.name
                ))
            })?
            .to_vec();
        let staleness = match (self.staleness, input.v_cached, input.k_cached) {
            (Staleness::Value, Some(v_cached), _) => {
                v_deviation(input.v_fresh, v_cached, input.prompt)?
            }
            (Staleness::Key, _, Some(k_cached)) => {
                row_deviation(input.k_fresh, k_cached, input.prompt.doc_range())?
            }
            _ => return Ok((relevance.clone(), Some(relevance))),
        };
        Ok((
            hybrid_scores(&relevance, &staleness, EQUAL_MIX),
            Some(relevance),
        ))
    }
}

/// What [`question_pass`] found: the relevance, and the layers it re-positioned.
#[derive(Debug)]
pub struct QuestionPass {
    /// Per document row, the mean over layers of the question's attention at that layer
    /// (A^3's score, smoothed, each layer's scaled to sum 1).
    pub relevance: Vec<f32>,
    /// Per layer, the cached keys re-positioned (RoPE at `positions`) and the cached values,
    /// `[H_kv, T, d]` each, owned, with the question rows holding this pass's K/V; `None`
    /// for layers up to `keep_after` and when the cache is not in the compute type. The
    /// selective layers write their fresh rows (the question's among them) over these
    /// instead of assembling and re-positioning the layer a second time.
    pub layers: Vec<Option<(Tensor, Tensor)>>,
}

/// The question rows alone through every layer over the reused cache (`cached`, re-positioned
/// to `positions`), measuring the question's attention over the document rows at each layer
/// (see [`QuestionPass`]). The layers after `keep_after` are handed back for the selective
/// layers. Empty when the prompt has no document rows.
pub fn question_pass(
    model: &Model,
    prompt: &RagPrompt,
    positions: &[u32],
    cached: &dyn CachedLayers,
    pooling_width: usize,
    keep_after: usize,
) -> Result<QuestionPass> {
    let n_doc = prompt.doc_range().len();
    let mut layers_out: Vec<Option<(Tensor, Tensor)>> = vec![None; model.num_layers()];
    if n_doc == 0 {
        return Ok(QuestionPass {
            relevance: Vec::new(),
            layers: layers_out,
        });
    }
    let t = prompt.len();
    let qn = prompt.question_len();
    let q_rows: Vec<u32> = positions[t - qn..].to_vec();
    let q_idx: Vec<u32> = ((t - qn) as u32..t as u32).collect();
    let mut h = model.embed(&prompt.ids[t - qn..])?;
    let mut mean = vec![0f32; n_doc];
    let layers = model.num_layers();
    for (l, kept) in layers_out.iter_mut().enumerate() {
        let (k_pre, v) = cached.layer(l)?;
        let dtype = model.dtype();
        // Kept for the selective layers only when they would have built the same tensors.
        let same_type = k_pre.dtype() == dtype && v.dtype() == dtype;
        // Owned, in the compute type: the question's fresh rows are written over them.
        let k_all = model.rope().apply(&k_pre.to_dtype(dtype)?, positions)?;
        let v = v.to_dtype(dtype)?.contiguous()?;
        let qkv = model.layer_qkv(l, &h)?;
        let q = model.rope().apply(&qkv.q, &q_rows)?;
        let k = model.rope().apply(&qkv.k, &q_rows)?;
        write_rows(&k_all, &q_idx, &k)?;
        write_rows(&v, &q_idx, &qkv.v)?;
        let scores = normalise(&a3_scores(&q, &k_all, prompt.prefix_len(), pooling_width)?);
        for (m, s) in mean.iter_mut().zip(&scores) {
            *m += s / layers as f32;
        }
        if l + 1 < layers {
            let a = model.layer_attention(l, &q, &q_rows, &k_all, &v, positions)?;
            h = model.layer_mlp(l, &h, &a)?;
        }
        if l > keep_after && same_type {
            *kept = Some((k_all, v));
        }
    }
    Ok(QuestionPass {
        relevance: mean,
        layers: layers_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fused_prefill, precompute_chunk, FusionParams, Method};
    use a3kv_model::testing::tiny_model;
    use a3kv_model::Family;

    /// The pass's relevance is a distribution over the document rows, and every variant
    /// runs through a fused prefill (one through the check layer, the rest selective).
    #[test]
    fn every_variant_fuses_and_the_relevance_sums_to_one() {
        let model = tiny_model(Family::Llama, 11).unwrap();
        let chunks: Vec<Vec<u32>> = vec![(1..20).collect(), (20..41).collect()];
        let prompt = RagPrompt::from_ids(&[3, 4, 5], &chunks, &[7, 8, 9, 10]).unwrap();
        let cached: Vec<_> = chunks
            .iter()
            .map(|c| precompute_chunk(&model, c, None).unwrap())
            .collect();
        let prefix = precompute_chunk(&model, &[3, 4, 5], None).unwrap();
        let cache = crate::fuse::PromptCache {
            prefix: Some(prefix.clone()),
            chunks: cached.clone(),
            question_len: 4,
        };
        let positions: Vec<u32> = (0..prompt.len() as u32).collect();
        let pass = question_pass(&model, &prompt, &positions, &cache, 5, 1).unwrap();
        assert!(pass.layers[..=1].iter().all(Option::is_none));
        assert!(pass.layers[2..].iter().all(Option::is_some));
        let rel = pass.relevance;
        assert_eq!(rel.len(), prompt.doc_range().len());
        assert!(
            (rel.iter().sum::<f32>() - 1.0).abs() < 1e-4,
            "{}",
            rel.iter().sum::<f32>()
        );
        let run = |name: &str| {
            let params = FusionParams {
                method: name.parse::<Method>().unwrap(),
                ..FusionParams::default()
            };
            fused_prefill(
                &model,
                &prompt,
                Some(prefix.clone()),
                &cached,
                &params,
                true,
            )
            .unwrap()
        };
        let kdev_floor = run("kdev").report.flop_floor;
        // The selective layers take the pass's re-positioned layers instead of building
        // them again: the same logits, bit for bit, as a run over the same rows that builds
        // every layer from the cache.
        let fused = run("layerattn_kdev");
        let p = prompt.prefix_len() as u32;
        let rows: Vec<usize> = fused
            .report
            .selected_positions
            .clone()
            .unwrap()
            .iter()
            .map(|&r| (r - p) as usize)
            .collect();
        let params = FusionParams {
            method: "kdev".parse::<Method>().unwrap(),
            ..FusionParams::default()
        };
        let mut again = crate::FusionRun::new(&model, prompt.clone(), params).unwrap();
        again.set_fixed_selection(rows);
        again.run_check(&model, &cache).unwrap();
        while again.next_layer() < model.num_layers() {
            let l = again.next_layer();
            again.run_layer(&model, l, &cache).unwrap();
        }
        let again = again.finish(&model, false).unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            fused.logits.to_vec1().unwrap(),
            again.logits.to_vec1().unwrap(),
        );
        assert_eq!(a, b);
        for name in ["layerattn", "layerattn_vdev", "layerattn_kdev"] {
            let out = run(name);
            // The budget's document rows beside the question's four.
            assert!(out.report.recomputed_tokens > 4, "{name} selected nothing");
            // The same budget as kdev, plus the question pass.
            assert!(
                out.report.flop_floor > kdev_floor,
                "{name}: pass not costed"
            );
        }
    }
}
